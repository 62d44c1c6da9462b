package rabbittest

import (
	"fmt"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Addr is the single test server: RABBITMQ_ADDR, or 127.0.0.1:5672 when it
// is unset.
func Addr() string {
	if a := os.Getenv("RABBITMQ_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:5672"
}

// URL is the AMQP URL of addr with the test credentials (guest/guest) and
// the default virtual host.
func URL(addr string) string { return "amqp://guest:guest@" + addr + "/" }

// Dial opens an admin connection to addr with a 3 s connect timeout.
func Dial(addr string) (*amqp.Connection, error) {
	return amqp.DialConfig(URL(addr), amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
}

// inCI reports whether the tests run in CI, where a missing server fails a
// test instead of skipping it.
func inCI() bool { return os.Getenv("CI") != "" }

// skipOrFail skips t with msg on a developer machine and fails it in CI.
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if inCI() {
		t.Fatal(msg + " (CI is set, so this fails instead of skipping)")
	}
	t.Skip(msg)
}

// RequireRabbit returns an admin connection to the test server ([Addr]),
// closed when the test ends. Without a server it skips the test with a
// message saying how to start one, and fails it when CI is set.
func RequireRabbit(t testing.TB) *amqp.Connection {
	t.Helper()
	conn, err := Dial(Addr())
	if err != nil {
		skipOrFail(t, fmt.Sprintf("RabbitMQ is not reachable on %s (%v). Start it with `rabbitmq-server -detached` "+
			"(or point RABBITMQ_ADDR at one)", Addr(), err))
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
