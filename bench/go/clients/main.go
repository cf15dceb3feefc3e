// Command clients runs the `clients` section's patterns through Go's amqp091 as its
// README and tutorials write them: PublishWithContext per message, Consume with Qos,
// confirms through NotifyPublish. One run per invocation, one result line on stdout:
//
//	clients MODE URL QUEUE N   ->   RESULT secs=S   (RESULT p50_us=U for roundtrip)
//
// Built in GOPATH mode against Debian's golang-github-rabbitmq-amqp091-go-dev, like
// bench/go/loadgen. The orchestrator deletes the queue afterwards.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "clients: %s: %v\n", what, err)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: clients MODE URL QUEUE N")
		os.Exit(2)
	}
	mode, url, queue := os.Args[1], os.Args[2], os.Args[3]
	n, err := strconv.Atoi(os.Args[4])
	must(err, "N")
	ctx := context.Background()
	body := []byte("xxxxxxxxxxxxxxxx")
	durable := mode == "confirm" || mode == "seed-publish" || mode == "seed-consume"
	msg := amqp.Publishing{ContentType: "text/plain", Body: body}
	if durable {
		msg.DeliveryMode = amqp.Persistent
	}

	conn, err := amqp.Dial(url)
	must(err, "dial")
	defer conn.Close()
	ch, err := conn.Channel()
	must(err, "channel")
	_, err = ch.QueueDeclare(queue, durable, false, false, false, nil)
	must(err, "queue.declare")

	publishAll := func() {
		for i := 0; i < n; i++ {
			must(ch.PublishWithContext(ctx, "", queue, false, false, msg), "publish")
		}
	}
	waitAll := func() {
		for {
			q, err := ch.QueueDeclarePassive(queue, durable, false, false, false, nil)
			must(err, "queue.declare passive")
			if q.Messages >= n {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}

	start := time.Now()
	switch mode {
	case "publish", "seed-publish":
		publishAll()
		waitAll()
	case "consume", "seed-consume":
		publishAll()
		waitAll()
		prefetch := 1000
		if mode == "seed-consume" {
			prefetch = 1
		}
		cch, err := conn.Channel()
		must(err, "channel")
		must(cch.Qos(prefetch, 0, false), "basic.qos")
		start = time.Now()
		deliveries, err := cch.Consume(queue, "", false, false, false, false, nil)
		must(err, "basic.consume")
		for i := 0; i < n; i++ {
			d, ok := <-deliveries
			if !ok {
				must(fmt.Errorf("closed after %d", i), "consume")
			}
			must(d.Ack(false), "basic.ack")
		}
	case "confirm":
		must(ch.Confirm(false), "confirm.select")
		// NotifyPublish, registered before the first publish: Debian's amqp091-go
		// 1.5.0 sends a deferred-confirm publish before registering its
		// confirmation, so a confirm that comes back at once is lost and Wait hangs.
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n))
		for i := 0; i < n; i++ {
			must(ch.PublishWithContext(ctx, "", queue, false, false, msg), "publish")
		}
		for i := 0; i < n; i++ {
			c, ok := <-confirms
			if !ok {
				must(fmt.Errorf("channel closed after %d confirms", i), "confirm")
			}
			if !c.Ack {
				must(fmt.Errorf("nacked"), "confirm")
			}
		}
	case "roundtrip":
		sub, err := amqp.Dial(url)
		must(err, "dial")
		defer sub.Close()
		cch, err := sub.Channel()
		must(err, "channel")
		deliveries, err := cch.Consume(queue, "", true, false, false, false, nil)
		must(err, "basic.consume")
		warmup := n / 10
		samples := make([]time.Duration, 0, n)
		for i := 0; i < n+warmup; i++ {
			t := time.Now()
			must(ch.PublishWithContext(ctx, "", queue, false, false, msg), "publish")
			<-deliveries
			if i >= warmup {
				samples = append(samples, time.Since(t))
			}
		}
		sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
		fmt.Printf("RESULT p50_us=%.1f\n", float64(samples[len(samples)/2].Nanoseconds())/1e3)
		return
	default:
		must(fmt.Errorf("unknown mode %q", mode), "mode")
	}
	fmt.Printf("RESULT secs=%.6f\n", time.Since(start).Seconds())
}
