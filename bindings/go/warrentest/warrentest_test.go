package warrentest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fake writes a shell script that misbehaves the way a broken binary would.
func fake(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake-warren")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func realBinary(t *testing.T) {
	t.Helper()
	if _, err := FindBinary(); err != nil {
		t.Skipf("skipped: %v", err)
	}
}

func TestAMissingBinarySaysHowToGetOne(t *testing.T) {
	t.Setenv("WARREN_BIN", "/nowhere/warren")
	_, err := StartBroker()
	if !errors.Is(err, ErrBinaryNotFound) || !strings.Contains(err.Error(), "/nowhere/warren") {
		t.Fatalf("got %v", err)
	}
	t.Setenv("WARREN_BIN", "")
	t.Setenv("PATH", t.TempDir())
	_, err = StartBroker()
	if !errors.Is(err, ErrBinaryNotFound) || !strings.Contains(err.Error(), "cargo xtask package") {
		t.Fatalf("got %v", err)
	}
}

func TestABrokerThatExitsAtOnceShowsItsLog(t *testing.T) {
	bin := fake(t, "echo 'warren: Address already in use (os error 98)' >&2; exit 1\n")
	_, err := StartBroker(Binary(bin))
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "exited with status 1") ||
		!strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("got %v", err)
	}
}

func TestABinaryWithoutTheManagementURLIsNamed(t *testing.T) {
	bin := fake(t, "echo amqp://guest:guest@127.0.0.1:1/%2f\n")
	_, err := StartBroker(Binary(bin))
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "printed no management URL") {
		t.Fatalf("got %v", err)
	}
}

func TestABrokerThatNeverGetsReadyIsKilledAfterTheTimeout(t *testing.T) {
	bin := fake(t, "exec sleep 60\n")
	_, err := StartBroker(Binary(bin), StartTimeout(300*time.Millisecond))
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "printed 0 of its 2 URL lines") {
		t.Fatalf("got %v", err)
	}
}

func TestAFaultWithoutAnActionIsRefusedBeforeSending(t *testing.T) {
	bin := fake(t, "echo amqp://x; echo http://127.0.0.1:1; exec sleep 60\n")
	b, err := StartBroker(Binary(bin))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	if _, err := b.Inject(OnAnyPublish().Nth(3)); err == nil || !strings.Contains(err.Error(), "no action") {
		t.Fatalf("got %v", err)
	}
}

// ---- with the real binary ----

func TestStartStopAndURLs(t *testing.T) {
	realBinary(t)
	b := Start(t)
	if !strings.HasPrefix(b.URL(), "amqp://guest:guest@127.0.0.1:") || !strings.HasPrefix(b.ManagementURL(), "http://127.0.0.1:") {
		t.Fatalf("urls %q %q", b.URL(), b.ManagementURL())
	}
	qs, err := b.Queues("")
	if err != nil || len(qs) != 0 {
		t.Fatalf("queues %v %v", qs, err)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if code := b.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("SIGTERM should be a graceful exit, got status %d", code)
	}
}

func TestAPortInUseIsNamed(t *testing.T) {
	realBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = StartBroker(Port(l.Addr().(*net.TCPAddr).Port))
	if !errors.Is(err, ErrStart) || !strings.Contains(strings.ToLower(err.Error()), "in use") {
		t.Fatalf("got %v", err)
	}
}

func TestABrokerThatDiesMidTestIsReported(t *testing.T) {
	realBinary(t)
	b := Start(t)
	if err := syscall.Kill(b.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.done
	_, err := b.Queues("")
	if !errors.Is(err, ErrBrokerDied) || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("got %v", err)
	}
}

func TestAWaitThatRunsOutIsErrWaitTimeout(t *testing.T) {
	realBinary(t)
	b := Start(t)
	_, err := b.WaitFor("nothing-here", Messages(1), Within(200*time.Millisecond))
	if !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("got %v", err)
	}
}

func TestRabbitMQVersionChoosesWhichRabbitMQTheBrokerSaysItIs(t *testing.T) {
	realBinary(t)
	b := Start(t, RabbitMQVersion("4.3"))
	u, err := url.Parse(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		t.Fatal(err)
	}
	// connection.start, the first frame after the protocol header, names the release.
	head := make([]byte, 7)
	if _, err := io.ReadFull(conn, head); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, binary.BigEndian.Uint32(head[3:])+1)
	if _, err := io.ReadFull(conn, payload); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\x07productS\x00\x00\x00\x08RabbitMQ", "\x07versionS\x00\x00\x00\x054.3.5"} {
		if !bytes.Contains(payload, []byte(want)) {
			t.Fatalf("connection.start lacks %q: %q", want, payload)
		}
	}
}

func TestTheVirtualClockMoves(t *testing.T) {
	realBinary(t)
	b := Start(t, VirtualClock())
	before, err := b.Clock()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Advance(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	after, err := b.Clock()
	if err != nil {
		t.Fatal(err)
	}
	if after.NowMs != before.NowMs+90_000 {
		t.Fatalf("clock %d then %d", before.NowMs, after.NowMs)
	}
}
