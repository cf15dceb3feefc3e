// Package tutorial is the seed tutorial's programs (tests/seed/) with amqp091-go, as
// application code that a test can call: each function is one script, taking the
// broker's URL.
package tutorial

import (
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// SendHello publishes "Hello World!" to the queue "hello".
func SendHello(url string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare("hello", false, false, false, false, nil); err != nil {
		return err
	}
	return ch.Publish("", "hello", false, false, amqp.Publishing{Body: []byte("Hello World!")})
}

// ReceiveHello consumes one message from "hello" with automatic acks.
func ReceiveHello(url string, timeout time.Duration) (string, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return "", err
	}
	if _, err := ch.QueueDeclare("hello", false, false, false, false, nil); err != nil {
		return "", err
	}
	msgs, err := ch.Consume("hello", "", true, false, false, false, nil)
	if err != nil {
		return "", err
	}
	select {
	case m := <-msgs:
		return string(m.Body), nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no message within %v", timeout)
	}
}

// NewTask publishes a persistent task to the durable "task_queue".
func NewTask(url, message string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare("task_queue", true, false, false, false, nil); err != nil {
		return err
	}
	return ch.Publish("", "task_queue", false, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(message)})
}

// Worker consumes "task_queue" with prefetch 1 and manual acks, spending PerDot of
// work on each "." of a task.
type Worker struct {
	conn   *amqp.Connection
	mu     sync.Mutex
	done   []string
	finish chan struct{}
}

// StartWorker connects and starts consuming.
func StartWorker(url string, perDot time.Duration) (*Worker, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := ch.QueueDeclare("task_queue", true, false, false, false, nil); err != nil {
		conn.Close()
		return nil, err
	}
	if err := ch.Qos(1, 0, false); err != nil {
		conn.Close()
		return nil, err
	}
	msgs, err := ch.Consume("task_queue", "", false, false, false, false, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	w := &Worker{conn: conn, finish: make(chan struct{})}
	go func() {
		defer close(w.finish)
		for m := range msgs {
			time.Sleep(time.Duration(strings.Count(string(m.Body), ".")) * perDot)
			w.mu.Lock()
			w.done = append(w.done, string(m.Body))
			w.mu.Unlock()
			_ = m.Ack(false)
		}
	}()
	return w, nil
}

// Done returns the tasks done so far, in order.
func (w *Worker) Done() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.done...)
}

// Stop closes the worker's connection and waits for its loop to end.
func (w *Worker) Stop() {
	w.conn.Close()
	<-w.finish
}

// EmitLog publishes a line to the fanout exchange "logs".
func EmitLog(url, message string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.ExchangeDeclare("logs", "fanout", false, false, false, false, nil); err != nil {
		return err
	}
	return ch.Publish("logs", "", false, false, amqp.Publishing{Body: []byte(message)})
}

// LogReceiver is an exclusive, server-named queue bound to "logs".
type LogReceiver struct {
	Queue string
	conn  *amqp.Connection
	msgs  <-chan amqp.Delivery
}

// ReceiveLogs binds a fresh queue to "logs" and consumes it.
func ReceiveLogs(url string) (*LogReceiver, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.ExchangeDeclare("logs", "fanout", false, false, false, false, nil)
	}
	var q amqp.Queue
	if err == nil {
		q, err = ch.QueueDeclare("", false, false, true, false, nil)
	}
	if err == nil {
		err = ch.QueueBind(q.Name, "", "logs", false, nil)
	}
	var msgs <-chan amqp.Delivery
	if err == nil {
		msgs, err = ch.Consume(q.Name, "", true, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &LogReceiver{Queue: q.Name, conn: conn, msgs: msgs}, nil
}

// Next returns the next line.
func (r *LogReceiver) Next(timeout time.Duration) (string, error) {
	select {
	case m := <-r.msgs:
		return string(m.Body), nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no log line within %v", timeout)
	}
}

// Close closes the receiver's connection (its exclusive queue goes with it).
func (r *LogReceiver) Close() error { return r.conn.Close() }

// ConfirmingPublisher publishes with confirms and retries a nacked message.
type ConfirmingPublisher struct {
	conn     *amqp.Connection
	ch       *amqp.Channel
	queue    string
	confirms chan amqp.Confirmation
}

// OpenPublisher declares the durable queue and puts the channel in confirm mode.
func OpenPublisher(url, queue string) (*ConfirmingPublisher, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err == nil {
		_, err = ch.QueueDeclare(queue, true, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	// Confirms through a listener, in publish order. Not PublishWithDeferredConfirm:
	// amqp091-go 1.5.0 (Debian's) sends the publish before it registers the deferred
	// confirmation (channel.go, PublishWithDeferredConfirmWithContext), so a confirm
	// that comes back at once, as Warren's nack does, is dropped and Wait never returns.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	return &ConfirmingPublisher{conn: conn, ch: ch, queue: queue, confirms: confirms}, nil
}

// Publish returns the attempts it took, or an error after `attempts` nacks.
func (p *ConfirmingPublisher) Publish(body string, attempts int) (int, error) {
	for attempt := 1; ; attempt++ {
		err := p.ch.Publish("", p.queue, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
		if err != nil {
			return attempt, err
		}
		confirm, ok := <-p.confirms
		if !ok {
			return attempt, fmt.Errorf("%s: the channel closed before its confirm", body)
		}
		if confirm.Ack {
			return attempt, nil
		}
		if attempt == attempts {
			return attempt, fmt.Errorf("%s nacked %d times", body, attempts)
		}
	}
}

// Close closes the publisher's connection.
func (p *ConfirmingPublisher) Close() error { return p.conn.Close() }

// ScheduleReminder queues a reminder that is only useful for ttl.
func ScheduleReminder(url, text string, ttl time.Duration) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	args := amqp.Table{"x-message-ttl": int32(ttl.Milliseconds())}
	if _, err := ch.QueueDeclare("reminders", true, false, false, false, args); err != nil {
		return err
	}
	return ch.Publish("", "reminders", false, false, amqp.Publishing{Body: []byte(text)})
}

// NextReminder returns the next reminder still valid; ok is false when none is.
func NextReminder(url string) (text string, ok bool, err error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return "", false, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return "", false, err
	}
	m, ok, err := ch.Get("reminders", true)
	return string(m.Body), ok, err
}
