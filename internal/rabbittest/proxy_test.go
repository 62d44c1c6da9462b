package rabbittest_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/rabbittest"
)

// echoServer answers every connection by echoing what it reads; got counts
// the bytes it received in total.
type echoServer struct {
	ln  net.Listener
	mu  sync.Mutex
	got int
	wg  sync.WaitGroup
}

func newEchoServer(t *testing.T) *echoServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{ln: ln}
	var conns sync.Map
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					s.mu.Lock()
					s.got += n
					s.mu.Unlock()
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		conns.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

func dialProxy(t *testing.T, p *rabbittest.Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads the echo within d.
func roundTrip(c net.Conn, msg string, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo differs: " + string(buf))
	}
	return nil
}

func TestProxy(t *testing.T) {
	brokertest.CheckNoLeak(t)
	echo := newEchoServer(t)

	t.Run("forwards", func(t *testing.T) {
		p := rabbittest.NewProxy(t, echo.ln.Addr().String())
		c := dialProxy(t, p)
		require.NoError(t, roundTrip(c, "hello", time.Second))
		assert.Equal(t, 1, p.Conns())
		assert.Equal(t, echo.ln.Addr().String(), p.Target())
	})

	t.Run("cut closes existing connections, new ones work", func(t *testing.T) {
		p := rabbittest.NewProxy(t, echo.ln.Addr().String())
		c := dialProxy(t, p)
		require.NoError(t, roundTrip(c, "a", time.Second))
		assert.Equal(t, 1, p.Cut())
		err := roundTrip(c, "b", time.Second)
		require.Error(t, err)
		var ne net.Error
		assert.False(t, errors.As(err, &ne) && ne.Timeout(), "a cut connection fails at once, not by timeout: %v", err)
		require.NoError(t, roundTrip(dialProxy(t, p), "c", time.Second))
	})

	t.Run("refuse then accept on the same address", func(t *testing.T) {
		p := rabbittest.NewProxy(t, echo.ln.Addr().String())
		c := dialProxy(t, p)
		require.NoError(t, roundTrip(c, "w", time.Second))
		p.Refuse()
		p.Refuse() // idempotent
		require.Error(t, roundTrip(c, "x", time.Second), "existing connection cut")
		_, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		require.Error(t, err, "refused")
		p.Accept()
		p.Accept() // no-op when accepting
		require.NoError(t, roundTrip(dialProxy(t, p), "y", time.Second))
	})

	t.Run("blackhole drops traffic of existing connections only", func(t *testing.T) {
		p := rabbittest.NewProxy(t, echo.ln.Addr().String())
		c := dialProxy(t, p)
		require.NoError(t, roundTrip(c, "1", time.Second))
		before := echo.received()
		assert.Equal(t, 1, p.Blackhole())
		err := roundTrip(c, "2", 300*time.Millisecond)
		var ne net.Error
		require.True(t, errors.As(err, &ne) && ne.Timeout(), "writes vanish, reads time out: %v", err)
		assert.Equal(t, before, echo.received(), "nothing reached the server")
		require.NoError(t, roundTrip(dialProxy(t, p), "3", time.Second))
	})

	t.Run("stall blocks the client's writes until resumed", func(t *testing.T) {
		p := rabbittest.NewProxy(t, echo.ln.Addr().String())
		c := dialProxy(t, p)
		require.NoError(t, roundTrip(c, "warm", time.Second))
		before := echo.received()
		assert.Equal(t, 1, p.Stall(true))
		// Write far more than the socket buffers hold: the write must block.
		big := bytes.Repeat([]byte("z"), 64<<20)
		_ = c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Write(big)
		var ne net.Error
		require.True(t, errors.As(err, &ne) && ne.Timeout(), "write blocks while stalled: wrote %d, %v", n, err)
		require.Less(t, n, len(big))
		_ = c.SetWriteDeadline(time.Time{})
		p.Stall(false)
		// What was written arrives once resumed (the echo is read to keep
		// the server's writes flowing). A read already waiting when the
		// stall began may forward one buffer, so count from before it.
		go func() { _, _ = io.Copy(io.Discard, c) }()
		want := before + n
		brokertest.WaitFor(t, 10*time.Second, "the stalled bytes to reach the server", func() bool { return echo.received() >= want })
	})

	t.Run("a stalled connection can still be cut", func(t *testing.T) {
		p := rabbittest.NewProxy(t, echo.ln.Addr().String())
		c := dialProxy(t, p)
		require.NoError(t, roundTrip(c, "s", time.Second))
		p.Stall(true)
		assert.Equal(t, 1, p.Cut())
		brokertest.WaitFor(t, 5*time.Second, "the proxy to drop the connection", func() bool { return p.Conns() == 0 })
	})

	t.Run("unreachable target closes the client", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		dead := ln.Addr().String()
		require.NoError(t, ln.Close())
		p := rabbittest.NewProxy(t, dead)
		c := dialProxy(t, p)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF)
	})
}

// TestProxyRabbit runs an AMQP connection through the proxy and cuts it.
func TestProxyRabbit(t *testing.T) {
	rabbittest.RequireRabbit(t)
	brokertest.CheckNoLeak(t)
	p := rabbittest.NewProxy(t, rabbittest.Addr())
	conn, err := rabbittest.Dial(p.Addr())
	require.NoError(t, err)
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	require.NoError(t, err)
	_, err = ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)
	require.Equal(t, 1, p.Cut())
	select {
	case e := <-closed:
		require.NotNil(t, e, "a cut is an error close, not a clean one")
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not notice the cut")
	}
}

// recTB records what RequireRabbit and Cluster do with their test.
type recTB struct {
	testing.TB
	skipped, failed string
}

func (r *recTB) Skip(args ...any)  { r.skipped = fmt.Sprint(args...); runtime.Goexit() }
func (r *recTB) Fatal(args ...any) { r.failed = fmt.Sprint(args...); runtime.Goexit() }

// run calls f with r on its own goroutine (Skip and Fatal end it).
func (r *recTB) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() { defer close(done); f(r) }()
	<-done
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestRequireRabbitWithoutServer(t *testing.T) {
	t.Setenv("RABBITMQ_ADDR", deadAddr(t))

	t.Setenv("CI", "")
	r := &recTB{TB: t}
	r.run(func(tb testing.TB) { rabbittest.RequireRabbit(tb) })
	assert.Empty(t, r.failed)
	assert.Contains(t, r.skipped, "rabbitmq-server -detached", "says how to start the server")
	assert.Contains(t, r.skipped, "RABBITMQ_ADDR")

	t.Setenv("CI", "true")
	r = &recTB{TB: t}
	r.run(func(tb testing.TB) { rabbittest.RequireRabbit(tb) })
	assert.Empty(t, r.skipped)
	assert.Contains(t, r.failed, "rabbitmq-server -detached", "fails in CI with the same how-to")
}

func brokertestWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	brokertest.WaitFor(t, d, what, cond)
}

func trim(s string) string { return strings.TrimSpace(s) }
