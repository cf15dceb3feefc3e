package tutorial

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"warren/bindings/go/warrentest"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func bodies(t *testing.T, b *warrentest.Broker, queue string) []string {
	t.Helper()
	q, err := b.Queue(queue)
	must(t, err)
	if q == nil {
		t.Fatalf("no queue %q", queue)
	}
	out := []string{}
	for _, body := range q.Bodies() {
		out = append(out, string(body))
	}
	return out
}

func TestHelloWorld(t *testing.T) {
	broker := warrentest.Start(t)
	must(t, SendHello(broker.URL()))
	// The message waits in the queue until someone receives it.
	if got := bodies(t, broker, "hello"); !reflect.DeepEqual(got, []string{"Hello World!"}) {
		t.Fatalf("queue hello holds %q", got)
	}
	got, err := ReceiveHello(broker.URL(), 5*time.Second)
	must(t, err)
	if got != "Hello World!" {
		t.Fatalf("received %q", got)
	}
	_, err = broker.WaitFor("hello", warrentest.Empty())
	must(t, err)
}

func TestWorkersShareTheTasksAndAckEach(t *testing.T) {
	broker := warrentest.Start(t)
	w1, err := StartWorker(broker.URL(), 0)
	must(t, err)
	w2, err := StartWorker(broker.URL(), 0)
	must(t, err)
	var tasks []string
	for i := 0; i < 10; i++ {
		tasks = append(tasks, fmt.Sprintf("task %d%s", i, strings.Repeat(".", i%3)))
		must(t, NewTask(broker.URL(), tasks[i]))
	}
	// Every task acked, then nothing in flight: no sleeps in the test.
	_, err = broker.WaitFor("task_queue", warrentest.Empty(), warrentest.NoUnacked())
	must(t, err)
	must(t, broker.WaitUntilIdle(5*time.Second))
	w1.Stop()
	w2.Stop()
	done := append(w1.Done(), w2.Done()...)
	sort.Strings(done)
	sort.Strings(tasks)
	if !reflect.DeepEqual(done, tasks) {
		t.Fatalf("done %q, published %q", done, tasks)
	}
	if len(w1.Done()) == 0 || len(w2.Done()) == 0 {
		t.Fatalf("prefetch 1 should share the work: %d and %d", len(w1.Done()), len(w2.Done()))
	}
}

func TestASeededTaskIsWorkedOff(t *testing.T) {
	broker := warrentest.Start(t)
	must(t, NewTask(broker.URL(), "first"))
	must(t, broker.SeedIn("/", "task_queue", []byte("seeded"), map[string]any{"delivery_mode": 2}))
	w, err := StartWorker(broker.URL(), 0)
	must(t, err)
	_, err = broker.WaitFor("task_queue", warrentest.Empty(), warrentest.NoUnacked())
	must(t, err)
	w.Stop()
	if got := w.Done(); !reflect.DeepEqual(got, []string{"first", "seeded"}) {
		t.Fatalf("done %q", got)
	}
}

func TestEverySubscriberGetsEachLogLine(t *testing.T) {
	broker := warrentest.Start(t)
	var receivers []*LogReceiver
	for i := 0; i < 2; i++ {
		r, err := ReceiveLogs(broker.URL())
		must(t, err)
		receivers = append(receivers, r)
	}
	must(t, EmitLog(broker.URL(), "info: Hello World!"))
	for _, r := range receivers {
		line, err := r.Next(5 * time.Second)
		must(t, err)
		if line != "info: Hello World!" {
			t.Fatalf("received %q", line)
		}
		must(t, r.Close())
	}
}

func TestANackedPublishIsRetried(t *testing.T) {
	broker := warrentest.Start(t)
	p, err := OpenPublisher(broker.URL(), "orders")
	must(t, err)
	defer p.Close()
	// The third publish's confirm is a nack, as when RabbitMQ cannot take a message.
	_, err = broker.Inject(warrentest.OnAnyPublish().Nth(3).NackConfirm())
	must(t, err)
	var attempts []int
	for i := 1; i <= 5; i++ {
		n, err := p.Publish(fmt.Sprintf("order %d", i), 3)
		must(t, err)
		attempts = append(attempts, n)
	}
	if !reflect.DeepEqual(attempts, []int{1, 1, 2, 1, 1}) {
		t.Fatalf("attempts %v", attempts)
	}
	// A nacked message may or may not be in the queue (RabbitMQ's rule).
	seen := map[string]bool{}
	for _, b := range bodies(t, broker, "orders") {
		seen[b] = true
	}
	if len(seen) != 5 {
		t.Fatalf("orders in the queue: %v", seen)
	}
}

func TestAReminderExpiresAfterThirtyMinutes(t *testing.T) {
	broker := warrentest.Start(t, warrentest.VirtualClock())
	must(t, ScheduleReminder(broker.URL(), "stand up", 30*time.Minute))
	must(t, broker.Advance(29*time.Minute))
	if got := bodies(t, broker, "reminders"); !reflect.DeepEqual(got, []string{"stand up"}) {
		t.Fatalf("after 29 minutes: %q", got)
	}
	must(t, broker.Advance(2*time.Minute))
	if got := bodies(t, broker, "reminders"); len(got) != 0 {
		t.Fatalf("after 31 minutes: %q", got)
	}
	_, ok, err := NextReminder(broker.URL())
	must(t, err)
	if ok {
		t.Fatal("an expired reminder was delivered")
	}
}

func TestDurableTasksSurviveARestart(t *testing.T) {
	broker := warrentest.Start(t)
	must(t, NewTask(broker.URL(), "resize 1.png"))
	must(t, NewTask(broker.URL(), "resize 2.png"))
	must(t, SendHello(broker.URL())) // transient: gone after the restart
	must(t, broker.Restart())
	if q, err := broker.Queue("hello"); err != nil || q != nil {
		t.Fatalf("queue hello after restart: %v, %v", q, err)
	}
	w, err := StartWorker(broker.URL(), 0)
	must(t, err)
	_, err = broker.WaitFor("task_queue", warrentest.Empty(), warrentest.NoUnacked())
	must(t, err)
	w.Stop()
	if got := w.Done(); !reflect.DeepEqual(got, []string{"resize 1.png", "resize 2.png"}) {
		t.Fatalf("done %q", got)
	}
}

func TestConfirmedTasksSurviveACrash(t *testing.T) {
	broker := warrentest.Start(t, warrentest.DataDir(t.TempDir()))
	p, err := OpenPublisher(broker.URL(), "task_queue")
	must(t, err)
	_, err = p.Publish("resize 1.png", 1)
	must(t, err)
	p.Close()
	must(t, broker.Crash())
	if got := bodies(t, broker, "task_queue"); !reflect.DeepEqual(got, []string{"resize 1.png"}) {
		t.Fatalf("after the crash: %q", got)
	}
}

func TestAMissingBinaryIsAClearError(t *testing.T) {
	_, err := warrentest.StartBroker(warrentest.Binary("/nonexistent/warren"))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/warren") {
		t.Fatalf("error %v", err)
	}
}
