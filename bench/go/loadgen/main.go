// Command loadgen is the Go amqp091 load for `cargo xtask bench`: one scenario per run,
// against any AMQP URL, with one result line on stdout ("RESULT key=value ...").
//
// It is built in GOPATH mode from Debian's golang-github-rabbitmq-amqp091-go-dev
// (GOPATH=/usr/share/gocode GO111MODULE=off), so the bench needs no module download.
// amqp091 publishes without waiting for the broker, which makes it the load that can
// saturate a broker; the orchestrator (bench/src) names every queue and exchange and
// deletes them afterwards, so a run killed by its deadline leaves nothing behind.
//
// Usage: loadgen MODE -url URL [-queue Q] [-exchange X] [-n N] [-size BYTES]
//
//	[-prefetch P] [-queues K] [-conns C] [-timeout SECONDS]
//
// Modes:
//
//	publish  fire-and-forget publishes into one queue (from -conns connections);
//	         timed until the queue holds n
//	fill     the same, for memory measurements (the queue is left in place)
//	consume  fill the queue untimed, then consume n with manual acks, prefetch P
//	fanout   n publishes to a fanout exchange bound to K queues, each consumed
//	latency  n round trips publish -> delivery, one at a time: p50 and p99
//	connect  n connection opens (TCP + AMQP handshake): p50
//	confirm  n persistent publishes on a durable queue, confirms pipelined
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

var (
	url      = flag.String("url", "amqp://guest:guest@127.0.0.1:5672/%2f", "broker URL")
	queue    = flag.String("queue", "warren-bench", "queue name (or prefix for fanout)")
	exchange = flag.String("exchange", "warren-bench.fanout", "fanout exchange name")
	n        = flag.Int("n", 10000, "messages (or samples)")
	size     = flag.Int("size", 16, "body size in bytes")
	prefetch = flag.Int("prefetch", 1000, "prefetch count for consumers")
	queues   = flag.Int("queues", 10, "queues bound to the fanout exchange")
	conns    = flag.Int("conns", 1, "publishing connections (publish mode), each sending n/conns")
	timeout  = flag.Float64("timeout", 60, "seconds before the run gives up")
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
	os.Exit(1)
}

func must(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func dial() *amqp.Connection {
	conn, err := amqp.Dial(*url)
	must(err, "dial")
	return conn
}

func channel(conn *amqp.Connection) *amqp.Channel {
	ch, err := conn.Channel()
	must(err, "channel")
	return ch
}

func body() []byte {
	b := make([]byte, *size)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func publishN(ch *amqp.Channel, exchange, key string, count int, msg amqp.Publishing) {
	for i := 0; i < count; i++ {
		must(ch.Publish(exchange, key, false, false, msg), "publish")
	}
}

// waitDepth polls the queue's message count on its own channel until it reaches want:
// the broker has routed every publish, which is what a publish rate has to mean.
func waitDepth(conn *amqp.Connection, name string, want int) {
	ch := channel(conn)
	defer ch.Close()
	for {
		q, err := ch.QueueDeclarePassive(name, false, false, false, false, nil)
		must(err, "queue.declare passive")
		if q.Messages >= want {
			return
		}
		time.Sleep(500 * time.Microsecond)
	}
}

func declare(ch *amqp.Channel, name string, durable bool) {
	_, err := ch.QueueDeclare(name, durable, false, false, false, nil)
	must(err, "queue.declare")
}

func secs(d time.Duration) string { return fmt.Sprintf("%.6f", d.Seconds()) }

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: loadgen MODE [flags]")
	}
	mode := os.Args[1]
	must(flag.CommandLine.Parse(os.Args[2:]), "flags")
	// Every run is bounded: the orchestrator also kills us, but a clean message helps.
	time.AfterFunc(time.Duration(*timeout*float64(time.Second)), func() {
		fail("%s: timed out after %.0f s", mode, *timeout)
	})
	msg := amqp.Publishing{Body: body()}

	switch mode {
	case "publish", "fill":
		conn := dial()
		ch := channel(conn)
		declare(ch, *queue, false)
		// One publisher per connection: amqp091 flushes every frame, so a single
		// connection is capped by the client; several show what the broker takes.
		pubs := []*amqp.Channel{ch}
		for i := 1; i < *conns; i++ {
			pubs = append(pubs, channel(dial()))
		}
		start := time.Now()
		var wg sync.WaitGroup
		for i, pch := range pubs {
			count := *n / len(pubs)
			if i == 0 {
				count += *n % len(pubs)
			}
			wg.Add(1)
			go func(pch *amqp.Channel, count int) {
				defer wg.Done()
				publishN(pch, "", *queue, count, msg)
			}(pch, count)
		}
		wg.Wait()
		client := time.Since(start)
		waitDepth(conn, *queue, *n)
		fmt.Printf("RESULT secs=%s client_secs=%s\n", secs(time.Since(start)), secs(client))
		conn.Close()

	case "consume":
		conn := dial()
		ch := channel(conn)
		declare(ch, *queue, false)
		publishN(ch, "", *queue, *n, msg)
		waitDepth(conn, *queue, *n)
		cch := channel(conn)
		must(cch.Qos(*prefetch, 0, false), "basic.qos")
		start := time.Now()
		deliveries, err := cch.Consume(*queue, "", false, false, false, false, nil)
		must(err, "basic.consume")
		for i := 0; i < *n; i++ {
			d, ok := <-deliveries
			if !ok {
				fail("consumer closed after %d deliveries", i)
			}
			must(d.Ack(false), "basic.ack")
		}
		fmt.Printf("RESULT secs=%s\n", secs(time.Since(start)))
		conn.Close()

	case "fanout":
		pub := dial()
		sub := dial()
		ch := channel(pub)
		must(ch.ExchangeDeclare(*exchange, "fanout", false, false, false, false, nil), "exchange.declare")
		var received int64
		total := int64(*n) * int64(*queues)
		done := make(chan struct{})
		var once sync.Once
		for k := 0; k < *queues; k++ {
			name := fmt.Sprintf("%s.%d", *queue, k)
			declare(ch, name, false)
			must(ch.QueueBind(name, "", *exchange, false, nil), "queue.bind")
			cch := channel(sub)
			must(cch.Qos(*prefetch, 0, false), "basic.qos")
			deliveries, err := cch.Consume(name, "", false, false, false, false, nil)
			must(err, "basic.consume")
			go func() {
				for d := range deliveries {
					must(d.Ack(false), "basic.ack")
					if atomic.AddInt64(&received, 1) == total {
						once.Do(func() { close(done) })
					}
				}
			}()
		}
		start := time.Now()
		publishN(ch, *exchange, "", *n, msg)
		<-done
		fmt.Printf("RESULT secs=%s\n", secs(time.Since(start)))
		pub.Close()
		sub.Close()

	case "latency":
		pub := dial()
		sub := dial()
		ch := channel(pub)
		declare(ch, *queue, false)
		cch := channel(sub)
		deliveries, err := cch.Consume(*queue, "", true, false, false, false, nil)
		must(err, "basic.consume")
		warmup := *n / 10
		samples := make([]time.Duration, 0, *n)
		for i := 0; i < *n+warmup; i++ {
			start := time.Now()
			must(ch.Publish("", *queue, false, false, msg), "publish")
			if _, ok := <-deliveries; !ok {
				fail("consumer closed")
			}
			if i >= warmup {
				samples = append(samples, time.Since(start))
			}
		}
		sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
		fmt.Printf("RESULT p50_us=%.1f p99_us=%.1f\n",
			float64(percentile(samples, 0.50).Nanoseconds())/1e3,
			float64(percentile(samples, 0.99).Nanoseconds())/1e3)
		pub.Close()
		sub.Close()

	case "connect":
		samples := make([]time.Duration, 0, *n)
		for i := 0; i < *n; i++ {
			start := time.Now()
			conn := dial()
			samples = append(samples, time.Since(start))
			conn.Close()
		}
		sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
		fmt.Printf("RESULT p50_us=%.1f\n", float64(percentile(samples, 0.50).Nanoseconds())/1e3)

	case "confirm":
		conn := dial()
		ch := channel(conn)
		declare(ch, *queue, true)
		must(ch.Confirm(false), "confirm.select")
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, *n))
		msg.DeliveryMode = amqp.Persistent
		start := time.Now()
		publishN(ch, "", *queue, *n, msg)
		for i := 0; i < *n; i++ {
			c := <-confirms
			if !c.Ack {
				fail("publish %d nacked", c.DeliveryTag)
			}
		}
		fmt.Printf("RESULT secs=%s\n", secs(time.Since(start)))
		conn.Close()

	default:
		fail("unknown mode %q", mode)
	}
}
