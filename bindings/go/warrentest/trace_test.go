package warrentest

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// amqpSession speaks a few AMQP 0-9-1 frames by hand (this package uses only the
// standard library): connect, declare a queue, publish to it, get the message, ack
// it, close. Every frame is written at once; the broker reads them in order, and
// basic.get's answer carries delivery tag 1, which the ack names.
func amqpSession(t *testing.T, amqpURL, queue, body string) {
	t.Helper()
	short := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	long := func(s string) []byte { return append(u32(uint32(len(s))), s...) }
	frame := func(typ byte, channel uint16, payload ...[]byte) []byte {
		p := bytes.Join(payload, nil)
		out := append([]byte{typ}, u16(channel)...)
		out = append(append(out, u32(uint32(len(p)))...), p...)
		return append(out, 0xce)
	}
	method := func(channel, class, id uint16, args ...[]byte) []byte {
		return frame(1, channel, append([][]byte{u16(class), u16(id)}, args...)...)
	}
	response := "\x00guest\x00guest"
	out := bytes.Join([][]byte{
		[]byte("AMQP\x00\x00\x09\x01"),
		method(0, 10, 11, u32(0), short("PLAIN"), long(response), short("en_US")),
		// Warren's (and RabbitMQ's) limits: 0 channels would mean "no limit", refused.
		method(0, 10, 31, u16(2047), u32(131072), u16(0)),
		method(0, 10, 40, short("/"), short(""), []byte{0}),
		method(1, 20, 10, short("")),
		method(1, 50, 10, u16(0), short(queue), []byte{0}, u32(0)),
		method(1, 60, 40, u16(0), short(""), short(queue), []byte{0}),
		frame(2, 1, u16(60), u16(0), u64(uint64(len(body))), u16(0)),
		frame(3, 1, []byte(body)),
		method(1, 60, 70, u16(0), short(queue), []byte{0}),
		method(1, 60, 80, u64(1), []byte{0}),
		method(0, 10, 50, u16(200), short(""), u16(0), u16(0)),
	}, nil)
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	// Frames in, until connection.close-ok (class 10, method 51).
	for {
		head := make([]byte, 7)
		if _, err := io.ReadFull(conn, head); err != nil {
			t.Fatalf("the broker closed the socket before close-ok: %v", err)
		}
		payload := make([]byte, binary.BigEndian.Uint32(head[3:])+1)
		if _, err := io.ReadFull(conn, payload); err != nil {
			t.Fatalf("the broker closed the socket before close-ok: %v", err)
		}
		if head[0] == 1 && binary.BigEndian.Uint16(payload) == 10 && binary.BigEndian.Uint16(payload[2:]) == 51 {
			return
		}
	}
}

func TestTheTraceFileAndTheMermaidTextShowWhatTheTestDid(t *testing.T) {
	realBinary(t)
	b := Start(t)
	amqpSession(t, b.URL(), "orders-go", "order 1")
	if _, err := b.WaitFor("orders-go", Empty(), NoUnacked()); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "trace.html")
	if err := b.TraceHTML(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	html := string(raw)
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(html)), "<!doctype html>") {
		t.Fatalf("not an HTML file: %.200s", html)
	}
	// One file: nothing to fetch from elsewhere.
	if strings.Contains(html, "<script src") || strings.Contains(html, "<link") {
		t.Fatal("the file loads something from elsewhere")
	}
	for _, seen := range []string{"orders-go", "basic.publish", "basic.get-ok", "basic.ack"} {
		if !strings.Contains(html, seen) {
			t.Errorf("the file does not mention %s", seen)
		}
	}

	diagram, err := b.TraceMermaid()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(diagram, "\n")
	if lines[0] != "sequenceDiagram" || !strings.Contains(diagram, "\n    participant B as broker\n") {
		t.Fatalf("not a sequence diagram:\n%s", diagram)
	}
	var arrows []string
	for _, l := range lines {
		if strings.Contains(l, "->>") {
			arrows = append(arrows, strings.TrimSpace(l))
		}
	}
	index := func(pattern string) int {
		re := regexp.MustCompile(pattern)
		for i, a := range arrows {
			if re.MatchString(a) {
				return i
			}
		}
		t.Fatalf("no arrow %s in\n%s", pattern, strings.Join(arrows, "\n"))
		return -1
	}
	// The frames were sent at once, so the client's arrows come in the order
	// written; the broker's answers in the order it gave them.
	publish := index(`^C\d+->>B: ch1 basic\.publish .*orders-go`)
	body := index(`^C\d+-->>B: ch1 content-body .*order 1`)
	get := index(`^C\d+->>B: ch1 basic\.get queue=.*orders-go`)
	ack := index(`^C\d+->>B: ch1 basic\.ack delivery_tag=1`)
	getOk := index(`^B->>C\d+: ch1 basic\.get-ok delivery_tag=1`)
	closeOk := index(`^B->>C\d+: ch0 connection\.close-ok`)
	if !(publish < body && body < get && get < ack && getOk < closeOk) {
		t.Fatalf("arrows out of order:\n%s", strings.Join(arrows, "\n"))
	}
}
