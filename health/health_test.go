package health_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/health"
	"github.com/domainevents/domainevents/outbox"
)

// patient is a Timeout no loaded machine reaches for checks that answer
// at once.
const patient = time.Minute

// part is a Checker whose answer the test sets.
type part struct {
	err   atomic.Pointer[error]
	calls atomic.Int64
}

func (p *part) Health(context.Context) error {
	p.calls.Add(1)
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (p *part) fail(err error) { p.err.Store(&err) }

// hanging ignores its ctx until released.
type hanging struct {
	release chan struct{}
	calls   atomic.Int64
}

func (h *hanging) Health(context.Context) error {
	h.calls.Add(1)
	<-h.release
	return nil
}

type panicking struct{}

func (panicking) Health(context.Context) error { panic("boom") }

func get(t *testing.T, srv *httptest.Server, path string) (int, string, http.Header) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header
}

func status(t *testing.T, srv *httptest.Server) (int, health.Report) {
	t.Helper()
	code, body, h := get(t, srv, "/status")
	assert.Equal(t, "application/json", h.Get("Content-Type"))
	var rep health.Report
	require.NoError(t, json.Unmarshal([]byte(body), &rep), body)
	return code, rep
}

func TestHealthAndStatus(t *testing.T) {
	h := &health.Handler{Timeout: patient}
	pub, sub, relay := &part{}, &part{}, &part{}
	require.NoError(t, h.Add("publisher", health.WithStatus(pub, func(context.Context) map[string]int { return map[string]int{"SpoolEntries": 3} })))
	require.NoError(t, h.Add("subscriber", sub))
	require.NoError(t, h.AddOptional("relay", health.WithStats(relay, func() struct{ Published int } { return struct{ Published int }{7} })))
	srv := httptest.NewServer(h)
	defer srv.Close()

	code, body, hdr := get(t, srv, "/healthz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)
	assert.Equal(t, "text/plain; charset=utf-8", hdr.Get("Content-Type"))
	assert.Equal(t, "no-store", hdr.Get("Cache-Control"))

	code, rep := status(t, srv)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, health.StatusOK, rep.Status)
	assert.Equal(t, map[string]any{"SpoolEntries": 3.0}, rep.Parts["publisher"].Details)
	assert.Equal(t, map[string]any{"Published": 7.0}, rep.Parts["relay"].Details)
	assert.True(t, rep.Parts["relay"].Optional)
	assert.Nil(t, rep.Parts["subscriber"].Details)

	t.Run("optional part down: degraded, 200", func(t *testing.T) {
		relay.fail(errors.New("outbox: health: unavailable: database is closed"))
		code, body, _ := get(t, srv, "/healthz")
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "degraded\nrelay: outbox: health: unavailable: database is closed\n", body)
	})
	t.Run("required part down: 503 with the reason", func(t *testing.T) {
		sub.fail(errors.New("rabbitmq: subscribe: unavailable: dial tcp 10.0.0.1:5672: connection refused\nsecond line"))
		code, body, _ := get(t, srv, "/healthz")
		assert.Equal(t, http.StatusServiceUnavailable, code)
		assert.Equal(t, "unavailable\nrelay: outbox: health: unavailable: database is closed\n"+
			"subscriber: rabbitmq: subscribe: unavailable: dial tcp 10.0.0.1:5672: connection refused second line\n", body)
		code, rep := status(t, srv)
		assert.Equal(t, http.StatusServiceUnavailable, code)
		assert.Equal(t, health.StatusUnavailable, rep.Status)
		assert.Equal(t, health.StatusUnavailable, rep.Parts["subscriber"].Status)
		assert.Equal(t, health.StatusOK, rep.Parts["publisher"].Status)
	})
	t.Run("probes never ask for details", func(t *testing.T) {
		var reports atomic.Int64
		h := &health.Handler{Timeout: patient}
		require.NoError(t, h.Add("p", health.WithStatus(&part{}, func(context.Context) int { reports.Add(1); return 1 })))
		rec := httptest.NewRecorder()
		h.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Zero(t, reports.Load())
		rec = httptest.NewRecorder()
		h.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/anywhere", nil))
		assert.Equal(t, int64(1), reports.Load())
	})
}

func TestMethodsAndPaths(t *testing.T) {
	h := &health.Handler{Timeout: patient}
	srv := httptest.NewServer(h)
	defer srv.Close()
	code, body, _ := get(t, srv, "/healthz")
	assert.Equal(t, http.StatusOK, code, "no part: nothing is down")
	assert.Equal(t, "ok\n", body)
	code, _, _ = get(t, srv, "/metrics")
	assert.Equal(t, http.StatusNotFound, code)

	resp, err := srv.Client().Post(srv.URL+"/healthz", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	assert.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))

	resp, err = srv.Client().Head(srv.URL + "/status")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, b)
}

// A part that hangs cannot hang the probe: the answer comes at the
// timeout, and later probes share the one check still running instead of
// piling up goroutines.
func TestHangingPartIsBoundedByTheTimeout(t *testing.T) {
	hang := &hanging{release: make(chan struct{})}
	h := &health.Handler{Timeout: 20 * time.Millisecond} // the part never answers before release: no load makes this flaky
	require.NoError(t, h.Add("broker", hang))
	require.NoError(t, h.Add("db", &part{}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	for range 5 {
		code, body, _ := get(t, srv, "/healthz")
		assert.Equal(t, http.StatusServiceUnavailable, code)
		assert.Contains(t, body, "broker: no answer within 20ms (checking since ")
	}
	assert.Equal(t, int64(1), hang.calls.Load(), "one check in flight, shared")

	close(hang.release)
	require.Eventually(t, func() bool {
		code, _, _ := get(t, srv, "/healthz")
		return code == http.StatusOK
	}, time.Minute, 10*time.Millisecond)
}

func TestPanickingPartIsAnError(t *testing.T) {
	h := &health.Handler{Timeout: patient}
	require.NoError(t, h.Add("bad", panicking{}))
	rep := h.Check(context.Background(), false)
	assert.Equal(t, health.StatusUnavailable, rep.Status)
	assert.Equal(t, "health check panicked: boom", rep.Parts["bad"].Error)
}

func TestUnencodableDetails(t *testing.T) {
	h := &health.Handler{Timeout: patient}
	require.NoError(t, h.Add("odd", health.WithStats(&part{}, func() chan int { return nil })))
	require.NoError(t, h.Add("fine", health.WithStats(&part{}, func() int { return 1 })))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	var rep health.Report
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep))
	assert.Contains(t, rep.Parts["odd"].Details, "details not encodable as JSON")
	assert.Equal(t, 1.0, rep.Parts["fine"].Details)
}

func TestAddErrors(t *testing.T) {
	var h health.Handler
	require.ErrorContains(t, h.Add("", &part{}), "name is empty")
	require.ErrorContains(t, h.Add("x", nil), `Add "x": checker is nil`)
	require.NoError(t, h.Add("x", &part{}))
	require.ErrorContains(t, h.AddOptional("x", &part{}), `Add "x": name already added`)
}

type backlogger struct {
	rows int64
	lag  time.Duration
	err  error
}

func (b backlogger) Backlog(context.Context) (int64, time.Duration, error) {
	return b.rows, b.lag, b.err
}

func TestBacklog(t *testing.T) {
	h := &health.Handler{Timeout: patient}
	require.NoError(t, h.Add("outbox", health.Backlog(backlogger{rows: 12, lag: 1500 * time.Millisecond})))
	require.NoError(t, h.AddOptional("other outbox", health.Backlog(backlogger{err: errors.New("outbox: backlog: unavailable: database is closed")})))
	rep := h.Check(context.Background(), true)
	assert.Equal(t, health.StatusDegraded, rep.Status)
	assert.Equal(t, health.BacklogStatus{Rows: 12, LagSeconds: 1.5}, rep.Parts["outbox"].Details)
	assert.Equal(t, "outbox: backlog: unavailable: database is closed", rep.Parts["other outbox"].Error)
}

// The real parts: the Publisher of Open (its broker unreachable, so its
// error is real) and an outbox relay with its store's backlog, on SQLite.
// The password never reaches the page.
func TestRealParts(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const password = "s3cret-Pa55"
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Host, cfg.Port = "127.0.0.1", 1 // nothing listens: connection refused
	cfg.Username = "orders"
	cfg.Password = broker.NewSecret(password)
	cfg.SpoolDir = t.TempDir()
	pub, err := domainevents.Open(ctx, cfg, domainevents.WithLogger(log))
	require.NoError(t, err)
	defer pub.Close(ctx)

	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "orders.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	require.NoError(t, err)
	defer db.Close()
	store, err := outbox.New(db, outbox.SQLite)
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx))
	rec := &brokertest.Recorder{}
	relay, err := outbox.NewRelay(store, rec, outbox.WithLogger(log))
	require.NoError(t, err)
	defer relay.Close(ctx)

	h := &health.Handler{Timeout: patient}
	require.NoError(t, h.Add("publisher", health.WithStatus(pub, pub.Status)))
	require.NoError(t, h.Add("relay", health.WithStats(relay, relay.Stats)))
	require.NoError(t, h.Add("outbox", health.Backlog(store)))
	srv := httptest.NewServer(h)
	defer srv.Close()

	var body string
	require.Eventually(t, func() bool {
		var code int
		code, body, _ = get(t, srv, "/healthz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "publisher: ")
	}, time.Minute, 20*time.Millisecond, "the publisher reports the refused connection")
	t.Log(body)
	assert.Contains(t, body, "127.0.0.1:1")
	assert.NotContains(t, body, "relay:")
	assert.NotContains(t, body, "outbox:")

	code, raw, _ := get(t, srv, "/status")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	t.Log(raw)
	assert.NotContains(t, raw, password)
	var rep health.Report
	require.NoError(t, json.Unmarshal([]byte(raw), &rep))
	details := rep.Parts["publisher"].Details.(map[string]any)
	assert.Contains(t, details, "SpoolEntries")
	assert.NotEmpty(t, details["Err"], "the Status's error as text")
	assert.Contains(t, rep.Parts["relay"].Details, "Published")
	assert.Equal(t, map[string]any{"Rows": 0.0, "LagSeconds": 0.0}, rep.Parts["outbox"].Details)
	assert.NotContains(t, body, password)
}
