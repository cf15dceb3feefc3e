// Package warrentest runs Warren, an AMQP 0-9-1 broker that stands in for RabbitMQ in
// tests, as a fixture of a Go test:
//
//	func TestOrders(t *testing.T) {
//		broker := warrentest.Start(t, warrentest.VirtualClock())
//		conn, err := amqp.Dial(broker.URL()) // github.com/rabbitmq/amqp091-go
//		...
//		q, err := broker.WaitFor("orders", warrentest.Messages(1))
//	}
//
// Start runs the `warren` binary ($WARREN_BIN, or the first on PATH) on free ports,
// reads the two URL lines it prints, and registers its stop with t.Cleanup. Every
// other call speaks the broker's HTTP control plane (docs/control-plane.md). Only
// the standard library is used.
package warrentest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// A broker needs milliseconds to start; the margin is for a loaded CI machine or
	// a large data directory to recover.
	defaultStartTimeout = 30 * time.Second
	// After SIGTERM a graceful shutdown closes connections (their close timeout is
	// 3 s) and flushes storage; past this the process is killed.
	stopTimeout = 10 * time.Second
	// A long poll gets this much beyond its own timeout: the broker answers 408 itself.
	httpSlack = 5 * time.Second
	// A plain call that takes longer means the broker hangs.
	httpTimeout  = 60 * time.Second
	logTailLines = 20
)

// Errors a caller can test for with errors.Is.
var (
	// ErrBinaryNotFound: no warren binary.
	ErrBinaryNotFound = errors.New("warrentest: no warren binary")
	// ErrStart: the broker exited, or printed no URLs in time.
	ErrStart = errors.New("warrentest: the broker did not start")
	// ErrBrokerDied: the broker process is gone while in use.
	ErrBrokerDied = errors.New("warrentest: the broker died")
	// ErrWaitTimeout: a wait ran out.
	ErrWaitTimeout = errors.New("warrentest: wait timed out")
)

// ControlError is a refusal of the control plane: its HTTP status and answer.
type ControlError struct {
	Method, Path string
	Status       int
	Reason       string
	Body         map[string]any
}

func (e *ControlError) Error() string {
	return fmt.Sprintf("warrentest: %s %s: %d %s", e.Method, e.Path, e.Status, e.Reason)
}

type config struct {
	binary       string
	host         string
	port         int
	mgmtPort     int
	user         string
	password     string
	args         []string
	startTimeout time.Duration
}

// Option sets what the warren command line sets.
type Option func(*config)

// VirtualClock makes TTLs, queue expiry and consumer timeouts follow Advance.
func VirtualClock() Option { return func(c *config) { c.args = append(c.args, "--virtual-clock") } }

// DataDir keeps durable state in dir: it survives Restart and Crash.
func DataDir(dir string) Option {
	return func(c *config) { c.args = append(c.args, "--data-dir", dir) }
}

// Vhost adds a virtual host besides "/".
func Vhost(name string) Option { return func(c *config) { c.args = append(c.args, "--vhost", name) } }

// Credentials sets the broker's user (guest/guest by default).
func Credentials(user, password string) Option {
	return func(c *config) { c.user, c.password = user, password }
}

// UserAdd adds a further user with tags (--user-add); it has no permissions unless
// Args("--permissions", …) gives some.
func UserAdd(name, password string, tags ...string) Option {
	spec := name + ":" + password
	if len(tags) > 0 {
		spec += ":" + strings.Join(tags, ",")
	}
	return func(c *config) { c.args = append(c.args, "--user-add", spec) }
}

// Heartbeat sets the heartbeat the broker proposes (0 disables).
func Heartbeat(d time.Duration) Option {
	return func(c *config) { c.args = append(c.args, "--heartbeat", strconv.Itoa(int(d/time.Second))) }
}

// ConsumerTimeout closes a channel whose delivery stays unacked this long (0: never).
func ConsumerTimeout(d time.Duration) Option {
	return func(c *config) {
		c.args = append(c.args, "--consumer-timeout", strconv.FormatInt(d.Milliseconds(), 10))
	}
}

// MemoryHighWatermark blocks publishers above this many bytes of messages.
func MemoryHighWatermark(bytes int) Option {
	return func(c *config) { c.args = append(c.args, "--memory-high-watermark", strconv.Itoa(bytes)) }
}

// RabbitMQVersion chooses which RabbitMQ's behaviour to copy ("3.10" by default).
func RabbitMQVersion(v string) Option {
	return func(c *config) { c.args = append(c.args, "--rabbitmq-version", v) }
}

// Binary runs this executable instead of $WARREN_BIN or PATH's warren.
func Binary(path string) Option { return func(c *config) { c.binary = path } }

// Host sets the listening address (127.0.0.1 by default).
func Host(host string) Option { return func(c *config) { c.host = host } }

// Port sets the AMQP port (0, a free port, by default).
func Port(port int) Option { return func(c *config) { c.port = port } }

// ManagementPort sets the HTTP port (0, a free port, by default).
func ManagementPort(port int) Option { return func(c *config) { c.mgmtPort = port } }

// StartTimeout bounds the wait for the URL lines (30 s by default).
func StartTimeout(d time.Duration) Option { return func(c *config) { c.startTimeout = d } }

// Args passes more command-line arguments as they are.
func Args(args ...string) Option { return func(c *config) { c.args = append(c.args, args...) } }

// FindBinary returns the warren executable: $WARREN_BIN, or the first on PATH.
func FindBinary() (string, error) {
	if env := os.Getenv("WARREN_BIN"); env != "" {
		if isExecutable(env) {
			return env, nil
		}
		return "", fmt.Errorf("%w: $WARREN_BIN names %q, which is not an executable file", ErrBinaryNotFound, env)
	}
	if path, err := exec.LookPath("warren"); err == nil {
		return path, nil
	}
	return "", fmt.Errorf("%w: set WARREN_BIN to its path or put it on PATH; it ships in the "+
		"Python wheel (pip install warren_broker-*.whl puts `warren` on PATH) and the npm "+
		"package, both built by `cargo xtask package`, or build it with "+
		"`cargo build --release -p warren-broker` (target/release/warren)", ErrBinaryNotFound)
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0
}

// logTail keeps the broker's last stderr lines, to explain a failure.
type logTail struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		if len(l.lines) > logTailLines {
			l.lines = l.lines[1:]
		}
	}
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if len(l.partial) > 0 {
		lines = append(append([]string(nil), lines...), string(l.partial))
	}
	if len(lines) == 0 {
		return "; it logged nothing"
	}
	return "; its last log lines:\n    " + strings.Join(lines, "\n    ")
}

// Broker is a running warren process.
type Broker struct {
	url, managementURL string
	user, password     string
	cmd                *exec.Cmd
	log                *logTail
	done               chan struct{} // closed once the process has exited
	waitErr            error         // cmd.Wait's answer, read after done
	stopOnce           sync.Once
	client             *http.Client
}

// Start starts a broker for this test on free ports and stops it when the test ends
// (t.Cleanup). A broker that cannot start fails the test with the reason.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	b, err := StartBroker(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("warrentest: stopping the broker: %v", err)
		}
	})
	return b
}

// StartBroker starts a broker without a test, for TestMain or a shared fixture; the
// caller stops it.
func StartBroker(opts ...Option) (*Broker, error) {
	c := config{host: "127.0.0.1", user: "guest", password: "guest", startTimeout: defaultStartTimeout}
	for _, o := range opts {
		o(&c)
	}
	binary := c.binary
	if binary == "" {
		found, err := FindBinary()
		if err != nil {
			return nil, err
		}
		binary = found
	} else if !isExecutable(binary) {
		return nil, fmt.Errorf("%w: the Binary option names %q, which is not an executable file", ErrBinaryNotFound, binary)
	}
	args := []string{
		"--bind", net.JoinHostPort(c.host, strconv.Itoa(c.port)),
		"--management-bind", net.JoinHostPort(c.host, strconv.Itoa(c.mgmtPort)),
	}
	if c.user != "guest" || c.password != "guest" {
		args = append(args, "--user", c.user, "--password", c.password)
	}
	args = append(args, c.args...)
	command := binary + " " + strings.Join(args, " ")

	cmd := exec.Command(binary, args...)
	cmd.SysProcAttr = procAttr()
	log := &logTail{}
	cmd.Stderr = log
	// A pipe of our own rather than StdoutPipe: cmd.Wait (run concurrently below, to
	// see an early exit) closes StdoutPipe's reader, which could lose lines not yet
	// read; this reader stays open until the lines are in.
	stdout, writer, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStart, err)
	}
	cmd.Stdout = writer
	err = cmd.Start()
	writer.Close() // the child has its copy; EOF comes when it exits
	if err != nil {
		stdout.Close()
		return nil, fmt.Errorf("%w: cannot run %s: %v", ErrStart, binary, err)
	}
	b := &Broker{user: c.user, password: c.password, cmd: cmd, log: log, done: make(chan struct{}),
		client: &http.Client{}}

	lines := make(chan string, 2)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for n := 0; n < 2 && scanner.Scan(); n++ {
			lines <- strings.TrimSpace(scanner.Text())
		}
		close(lines)
		// Nothing more is printed; keep reading so the pipe never fills.
		_, _ = io.Copy(io.Discard, stdout)
		stdout.Close()
	}()
	go func() {
		b.waitErr = cmd.Wait()
		close(b.done)
	}()

	timer := time.NewTimer(c.startTimeout)
	defer timer.Stop()
	var urls []string
	for len(urls) < 2 {
		select {
		case line, ok := <-lines:
			if ok {
				urls = append(urls, line)
				continue
			}
			<-b.done
			hint := ""
			if len(urls) == 1 {
				hint = " (it printed no management URL: is this binary older than --management-bind?)"
			}
			return nil, fmt.Errorf("%w: warren %s before it was ready%s (command: %s)%s",
				ErrStart, exitText(cmd), hint, command, log)
		case <-timer.C:
			_ = cmd.Process.Kill()
			<-b.done
			return nil, fmt.Errorf("%w: warren printed %d of its 2 URL lines within %v (command: %s)%s",
				ErrStart, len(urls), c.startTimeout, command, log)
		}
	}
	b.url, b.managementURL = urls[0], urls[1]
	return b, nil
}

func exitText(cmd *exec.Cmd) string {
	state := cmd.ProcessState
	if state == nil {
		return "is gone"
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "was killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exited with status %d", state.ExitCode())
}

// URL is the AMQP URL, amqp://USER:PASSWORD@HOST:PORT/%2f, for amqp091-go's Dial.
func (b *Broker) URL() string { return b.url }

// ManagementURL is the control plane's base URL, http://HOST:PORT.
func (b *Broker) ManagementURL() string { return b.managementURL }

// URLFor is the AMQP URL for another virtual host.
func (b *Broker) URLFor(vhost string) string {
	return b.url[:strings.LastIndexByte(b.url, '/')+1] + url.PathEscape(vhost)
}

// Pid is the broker process's id.
func (b *Broker) Pid() int { return b.cmd.Process.Pid }

// Running says whether the process is still there.
func (b *Broker) Running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// Log returns the broker's last stderr lines.
func (b *Broker) Log() string { return b.log.String() }

// Stop sends SIGTERM (every connection gets 320 CONNECTION_FORCED) and kills the
// process if it has not exited within 10 s. Stopping twice is harmless.
func (b *Broker) Stop() error {
	var err error
	b.stopOnce.Do(func() {
		if !b.Running() {
			return
		}
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(stopTimeout):
			_ = b.cmd.Process.Kill()
			<-b.done
			err = fmt.Errorf("warrentest: the broker ignored SIGTERM for %v and was killed%s", stopTimeout, b.log)
		}
	})
	return err
}

func (b *Broker) died(doing string) error {
	return fmt.Errorf("%w: the warren broker (pid %d, %s) %s; cannot %s%s",
		ErrBrokerDied, b.cmd.Process.Pid, b.url, exitText(b.cmd), doing, b.log)
}

// call makes one control-plane request and decodes the JSON answer into out.
func (b *Broker) call(method, path string, body any, out any, timeout time.Duration) error {
	doing := method + " " + path
	if !b.Running() {
		return b.died(doing)
	}
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, b.managementURL+path, reader)
	if err != nil {
		return err
	}
	req.SetBasicAuth(b.user, b.password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := *b.client
	client.Timeout = timeout
	resp, err := client.Do(req)
	if err != nil {
		// Refused or reset: most likely the process just died; say so.
		select {
		case <-b.done:
			return b.died(doing)
		case <-time.After(500 * time.Millisecond):
		}
		return fmt.Errorf("warrentest: %s: no answer from %s: %w", doing, b.managementURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("warrentest: %s: %w", doing, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil || len(raw) == 0 {
			return nil
		}
		if s, ok := out.(*string); ok {
			*s = string(raw)
			return nil
		}
		return json.Unmarshal(raw, out)
	}
	var answer map[string]any
	_ = json.Unmarshal(raw, &answer)
	reason, _ := answer["reason"].(string)
	if reason == "" {
		reason = string(raw)
	}
	if resp.StatusCode == http.StatusRequestTimeout {
		return fmt.Errorf("%w: %s: %s", ErrWaitTimeout, doing, reason)
	}
	return &ControlError{Method: method, Path: path, Status: resp.StatusCode, Reason: reason, Body: answer}
}

func esc(s string) string { return url.PathEscape(s) }

// Message is one message in a queue as the snapshot shows it.
type Message struct {
	Body         []byte         `json:"-"`
	BodyText     string         `json:"body"`
	BodyEncoding string         `json:"body_encoding"`
	Properties   map[string]any `json:"properties"`
	Exchange     string         `json:"exchange"`
	RoutingKey   string         `json:"routing_key"`
	Redelivered  bool           `json:"redelivered"`
}

// Queue is a queue's state at one instant.
type Queue struct {
	Vhost     string `json:"vhost"`
	Name      string `json:"name"`
	Durable   bool   `json:"durable"`
	Messages  int    `json:"messages"`                // ready and unacked
	Ready     int    `json:"messages_ready"`          // ready only
	Unacked   int    `json:"messages_unacknowledged"` // delivered, not yet acked
	Consumers int    `json:"consumers"`
	// The messages themselves: ready ones in queue order, and delivered unacked ones.
	ReadyMessages   []Message `json:"ready"`
	UnackedMessages []Message `json:"unacked"`
}

// Bodies returns the ready messages' bodies, in queue order.
func (q *Queue) Bodies() [][]byte {
	out := make([][]byte, len(q.ReadyMessages))
	for i, m := range q.ReadyMessages {
		out[i] = m.Body
	}
	return out
}

func (q *Queue) decode() error {
	for _, list := range [][]Message{q.ReadyMessages, q.UnackedMessages} {
		for i := range list {
			m := &list[i]
			if m.BodyEncoding == "base64" {
				body, err := base64.StdEncoding.DecodeString(m.BodyText)
				if err != nil {
					return err
				}
				m.Body = body
			} else {
				m.Body = []byte(m.BodyText)
			}
		}
	}
	return nil
}

// Snapshot is the whole state, as docs/control-plane.md shows it.
type Snapshot struct {
	Clock       Clock            `json:"clock"`
	Vhosts      []string         `json:"vhosts"`
	Queues      []Queue          `json:"queues"`
	Exchanges   []map[string]any `json:"exchanges"`
	Bindings    []map[string]any `json:"bindings"`
	Connections []Connection     `json:"connections"`
	Faults      []map[string]any `json:"faults"`
}

// Connection is one client connection in the snapshot.
type Connection struct {
	ID       uint64 `json:"id"`
	Name     string `json:"name"`
	Peer     string `json:"peer"`
	User     string `json:"user"`
	Vhost    string `json:"vhost"`
	Channels []int  `json:"channels"`
}

// Clock is the broker's clock.
type Clock struct {
	Virtual bool  `json:"virtual"`
	NowMs   int64 `json:"now_ms"`
}

// Snapshot returns the whole state; vhost "" means every vhost.
func (b *Broker) Snapshot(vhost string) (*Snapshot, error) {
	path := "/api/warren/snapshot"
	if vhost != "" {
		path += "?vhost=" + url.QueryEscape(vhost)
	}
	var s Snapshot
	if err := b.call("GET", path, nil, &s, httpTimeout); err != nil {
		return nil, err
	}
	for i := range s.Queues {
		if err := s.Queues[i].decode(); err != nil {
			return nil, err
		}
	}
	return &s, nil
}

// Queues returns every queue of the vhost ("" for all).
func (b *Broker) Queues(vhost string) ([]Queue, error) {
	s, err := b.Snapshot(vhost)
	if err != nil {
		return nil, err
	}
	return s.Queues, nil
}

// Queue returns a queue of "/"; nil, nil when there is none.
func (b *Broker) Queue(name string) (*Queue, error) { return b.QueueIn("/", name) }

// QueueIn returns a queue of a vhost; nil, nil when there is none.
func (b *Broker) QueueIn(vhost, name string) (*Queue, error) {
	var q Queue
	err := b.call("GET", "/api/warren/queues/"+esc(vhost)+"/"+esc(name), nil, &q, httpTimeout)
	var ce *ControlError
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &q, q.decode()
}

// Connections returns the client connections (ids for the fault scopes).
func (b *Broker) Connections() ([]Connection, error) {
	s, err := b.Snapshot("")
	if err != nil {
		return nil, err
	}
	return s.Connections, nil
}

// WaitUntilIdle returns once nothing is in flight, or ErrWaitTimeout.
func (b *Broker) WaitUntilIdle(timeout time.Duration) error {
	return b.call("POST", "/api/warren/wait/idle", map[string]any{"timeout_ms": timeout.Milliseconds()},
		nil, timeout+httpSlack)
}

// Condition is one thing WaitFor waits for.
type Condition func(map[string]any)

// Messages: the queue holds n messages, ready and unacked together.
func Messages(n int) Condition { return func(m map[string]any) { m["messages"] = n } }

// Empty: the queue holds no message.
func Empty() Condition { return func(m map[string]any) { m["empty"] = true } }

// NoUnacked: no delivery of the queue waits for an ack.
func NoUnacked() Condition { return func(m map[string]any) { m["no_unacked"] = true } }

// Consumers: the queue has n consumers.
func Consumers(n int) Condition { return func(m map[string]any) { m["consumers"] = n } }

// InVhost: the queue is in this vhost ("/" otherwise).
func InVhost(vhost string) Condition { return func(m map[string]any) { m["vhost"] = vhost } }

// Within: how long to wait (5 s otherwise).
func Within(d time.Duration) Condition {
	return func(m map[string]any) { m["timeout_ms"] = d.Milliseconds() }
}

// WaitFor waits until the queue meets every condition and returns its state.
func (b *Broker) WaitFor(queue string, conditions ...Condition) (*Queue, error) {
	body := map[string]any{"timeout_ms": int64(5000)}
	for _, c := range conditions {
		c(body)
	}
	vhost := "/"
	if v, ok := body["vhost"].(string); ok {
		vhost = v
		delete(body, "vhost")
	}
	timeout := time.Duration(body["timeout_ms"].(int64)) * time.Millisecond
	var q Queue
	if err := b.call("POST", "/api/warren/wait/queue/"+esc(vhost)+"/"+esc(queue), body, &q, timeout+httpSlack); err != nil {
		return nil, err
	}
	return &q, q.decode()
}

// Inject adds a fault rule and returns its id.
func (b *Broker) Inject(f Fault) (int, error) {
	if f.rule["action"] == nil {
		return 0, fmt.Errorf("warrentest: fault %v has no action: end it with CloseChannel, CloseConnection, NackConfirm or WithholdConfirm", f.rule)
	}
	var answer struct {
		ID int `json:"id"`
	}
	err := b.call("POST", "/api/warren/faults", f.rule, &answer, httpTimeout)
	return answer.ID, err
}

// Faults lists the fault rules with how often each fired.
func (b *Broker) Faults() ([]map[string]any, error) {
	var out []map[string]any
	err := b.call("GET", "/api/warren/faults", nil, &out, httpTimeout)
	return out, err
}

// RemoveFault removes one rule.
func (b *Broker) RemoveFault(id int) error {
	return b.call("DELETE", "/api/warren/faults/"+strconv.Itoa(id), nil, nil, httpTimeout)
}

// ClearFaults removes every rule.
func (b *Broker) ClearFaults() error {
	return b.call("DELETE", "/api/warren/faults", nil, nil, httpTimeout)
}

// CloseConnection closes a connection with any code and text.
func (b *Broker) CloseConnection(id uint64, code int, text string) error {
	return b.call("POST", fmt.Sprintf("/api/warren/connections/%d/close", id),
		map[string]any{"code": code, "text": text}, nil, httpTimeout)
}

// CloseChannel closes one channel with any code and text.
func (b *Broker) CloseChannel(id uint64, channel int, code int, text string) error {
	return b.call("POST", fmt.Sprintf("/api/warren/connections/%d/channels/%d/close", id, channel),
		map[string]any{"code": code, "text": text}, nil, httpTimeout)
}

// DropConnection makes the socket just die, with no close frame.
func (b *Broker) DropConnection(id uint64) error {
	return b.call("POST", fmt.Sprintf("/api/warren/connections/%d/drop", id), nil, nil, httpTimeout)
}

// CutConnection makes the socket die in the middle of a frame.
func (b *Broker) CutConnection(id uint64) error {
	return b.call("POST", fmt.Sprintf("/api/warren/connections/%d/cut", id), nil, nil, httpTimeout)
}

// CancelConsumer sends basic.cancel from the broker's side.
func (b *Broker) CancelConsumer(vhost, queue, consumerTag string) error {
	return b.call("POST", "/api/warren/consumers/cancel",
		map[string]any{"vhost": vhost, "queue": queue, "consumer_tag": consumerTag}, nil, httpTimeout)
}

// MemoryAlarm raises or clears the memory alarm (connection.blocked).
func (b *Broker) MemoryAlarm(on bool) error {
	return b.call("POST", "/api/warren/memory-alarm", map[string]any{"on": on}, nil, httpTimeout)
}

// Clock returns the broker's clock.
func (b *Broker) Clock() (Clock, error) {
	var c Clock
	err := b.call("GET", "/api/warren/clock", nil, &c, httpTimeout)
	return c, err
}

// Advance moves the virtual clock (VirtualClock()): TTLs, expiry, consumer timeouts.
func (b *Broker) Advance(d time.Duration) error {
	return b.call("POST", "/api/warren/clock/advance", map[string]any{"ms": d.Milliseconds()}, nil, httpTimeout)
}

// Restart restarts as RabbitMQ does: connections get 320, durable state stays.
// It returns once the broker serves again.
func (b *Broker) Restart() error {
	return b.call("POST", "/api/warren/restart", nil, nil, httpTimeout)
}

// Crash is a power cut: sockets die; with a DataDir, what was not fsynced is lost.
func (b *Broker) Crash() error { return b.call("POST", "/api/warren/crash", nil, nil, httpTimeout) }

// StallStorage holds writes back (confirms stop) while on.
func (b *Broker) StallStorage(on bool) error {
	return b.call("POST", "/api/warren/storage/stall", map[string]any{"on": on}, nil, httpTimeout)
}

// Seed puts a message into an existing queue of "/", as if it had been published.
func (b *Broker) Seed(queue string, body []byte) error { return b.SeedIn("/", queue, body, nil) }

// SeedIn puts a message with properties into an existing queue of a vhost.
func (b *Broker) SeedIn(vhost, queue string, body []byte, properties map[string]any) error {
	req := map[string]any{"vhost": vhost, "queue": queue}
	if isUTF8(body) {
		req["body"], req["body_encoding"] = string(body), "string"
	} else {
		req["body"], req["body_encoding"] = base64.StdEncoding.EncodeToString(body), "base64"
	}
	if properties != nil {
		req["properties"] = properties
	}
	return b.call("POST", "/api/warren/seed", req, nil, httpTimeout)
}

func isUTF8(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }

// Trace starts or stops recording every frame.
func (b *Broker) Trace(on bool) error {
	return b.call("POST", "/api/warren/trace", map[string]any{"on": on}, nil, httpTimeout)
}

// TraceEntries returns the recorded frames, in order.
func (b *Broker) TraceEntries() ([]map[string]any, error) {
	var out []map[string]any
	err := b.call("GET", "/api/warren/trace", nil, &out, httpTimeout)
	return out, err
}

// TraceText returns the trace as text, one frame a line.
func (b *Broker) TraceText() (string, error) {
	var out string
	err := b.call("GET", "/api/warren/trace?format=text", nil, &out, httpTimeout)
	return out, err
}

// TraceHTML writes the trace as one self-contained HTML file (the sequence diagram
// of every frame and the broker's state now) that opens in a browser with no server
// and no network: an artifact for a failing test.
func (b *Broker) TraceHTML(path string) error {
	var html string
	if err := b.call("GET", "/api/warren/trace.html", nil, &html, httpTimeout); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(html), 0o644)
}

// TraceMermaid returns the trace as a Mermaid sequence diagram, for a failure message.
func (b *Broker) TraceMermaid() (string, error) {
	var out string
	err := b.call("GET", "/api/warren/trace.mmd", nil, &out, httpTimeout)
	return out, err
}

// AddVhost creates a virtual host (RabbitMQ's PUT /api/vhosts/{name}).
func (b *Broker) AddVhost(name string) error {
	return b.call("PUT", "/api/vhosts/"+esc(name), nil, nil, httpTimeout)
}

// DeleteVhost deletes a virtual host and closes its connections.
func (b *Broker) DeleteVhost(name string) error {
	return b.call("DELETE", "/api/vhosts/"+esc(name), nil, nil, httpTimeout)
}

// Fault is a fault rule for Inject, built as Rust's Fault:
//
//	warrentest.OnPublishTo("orders").Nth(3).CloseChannel(406, "orders are closed")
type Fault struct{ rule map[string]any }

// OnPublishTo fires on publishes to an exchange ("" is the default exchange).
func OnPublishTo(exchange string) Fault {
	return Fault{map[string]any{"on": "publish_to", "exchange": exchange}}
}

// OnPublishRoutedTo fires on publishes routed to a queue.
func OnPublishRoutedTo(queue string) Fault {
	return Fault{map[string]any{"on": "publish_routed_to", "queue": queue}}
}

// OnAnyPublish fires on any publish.
func OnAnyPublish() Fault { return Fault{map[string]any{"on": "any_publish"}} }

// OnAck fires on acks.
func OnAck() Fault { return Fault{map[string]any{"on": "ack"}} }

func (f Fault) with(key string, value any) Fault {
	rule := make(map[string]any, len(f.rule)+1)
	for k, v := range f.rule {
		rule[k] = v
	}
	rule[key] = value
	return Fault{rule}
}

// OnChannel narrows the rule to one channel number.
func (f Fault) OnChannel(n int) Fault { return f.with("channel", n) }

// OnConnection narrows the rule to one connection (ids from Connections).
func (f Fault) OnConnection(id uint64) Fault { return f.with("connection", id) }

// Nth fires on the nth event in scope only (1 is the first).
func (f Fault) Nth(n int) Fault { return f.with("nth", n) }

// Times fires on the next n events in scope.
func (f Fault) Times(n int) Fault { return f.with("times", n) }

// CloseChannel closes the channel with this code and text.
func (f Fault) CloseChannel(code int, text string) Fault {
	return f.with("action", map[string]any{"type": "close_channel", "code": code, "text": text})
}

// CloseConnection closes the connection with this code and text.
func (f Fault) CloseConnection(code int, text string) Fault {
	return f.with("action", map[string]any{"type": "close_connection", "code": code, "text": text})
}

// NackConfirm nacks the publish's confirm.
func (f Fault) NackConfirm() Fault { return f.with("action", map[string]any{"type": "nack_confirm"}) }

// WithholdConfirm never confirms the publish.
func (f Fault) WithholdConfirm() Fault {
	return f.with("action", map[string]any{"type": "withhold_confirm"})
}
