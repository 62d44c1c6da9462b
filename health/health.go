package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultTimeout bounds a request when [Handler.Timeout] is zero.
const DefaultTimeout = time.Second

// maxErrorLen bounds the text of one part's error in a response.
const maxErrorLen = 1024

// Checker is what the handler asks: anything with a Health method, such as
// the Publisher of domainevents.Open, a subscriber, an adapter, an outbox
// relay (they implement broker.HealthChecker). Health returns nil when the
// part is ready, otherwise an error saying why; it should return by ctx's
// deadline (the handler answers at the deadline anyway).
type Checker interface {
	Health(ctx context.Context) error
}

// Reporter is implemented by a Checker that has details for the status
// document: a value encoding/json can write (spool depth, backlog,
// counters). The handler calls Report after Health, within the same
// deadline, for the status document only: a probe of /healthz never calls
// it. [WithStatus], [WithStats] and [Backlog] make Reporters of what the
// library has.
type Reporter interface {
	Report(ctx context.Context) any
}

// The values of [Report].Status and [PartReport].Status.
const (
	// StatusOK: every part is ready.
	StatusOK = "ok"
	// StatusDegraded: every required part is ready; an optional one is
	// not. The response is still 200.
	StatusDegraded = "degraded"
	// StatusUnavailable: a required part is not ready (or did not answer
	// in time). The response is 503.
	StatusUnavailable = "unavailable"
)

// Report is the status document: /status writes it as JSON.
type Report struct {
	// Status is StatusOK, StatusDegraded or StatusUnavailable.
	Status string `json:"status"`
	// Time is when the check started, in UTC.
	Time time.Time `json:"time"`
	// Parts are the registered parts by name.
	Parts map[string]PartReport `json:"parts"`
}

// PartReport is what one part said.
type PartReport struct {
	// Status is StatusOK or StatusUnavailable.
	Status string `json:"status"`
	// Error is why the part is not ready: its Health error, a panic in it,
	// or that it did not answer within the timeout.
	Error string `json:"error,omitempty"`
	// Optional marks a part added with [Handler.AddOptional].
	Optional bool `json:"optional,omitempty"`
	// Details are the part's [Reporter] value (status document only).
	Details any `json:"details,omitempty"`
}

// Handler serves readiness: GET /healthz answers 200 "ok" or 503 with the
// reason as text, GET /status the JSON [Report] (same codes), for the
// parts added with [Handler.Add]. The zero value is ready to use; a
// Handler is safe for concurrent use, parts may be added while it serves.
//
// Each request checks every part concurrently and answers by its
// [Handler.Timeout], whatever the parts do: a part that has not answered
// is reported unavailable ("no answer within 1s"). Requests that arrive
// while a part's check is still running share that check instead of
// starting another, so a part that hangs holds one goroutine, not one per
// probe. A panic in a part is reported as its error.
//
// Errors are written as the parts return them: the library's never carry
// a password or a URL with credentials; check your own parts' errors for
// the same. Each is cut at 1 KiB.
type Handler struct {
	// Timeout bounds each request; DefaultTimeout (1s) when zero. Keep it
	// below the probe's own timeout (Kubernetes: timeoutSeconds, 1 by
	// default) so that the answer says why.
	Timeout time.Duration

	mu    sync.Mutex
	parts []*part
}

// part is a registered Checker and its checks in flight.
type part struct {
	name     string
	c        Checker
	optional bool

	mu      sync.Mutex
	flights [2]*flight // [0]: health only; [1]: with details
}

// flight is one run of a part's check, shared by the requests that wait
// for it.
type flight struct {
	done    chan struct{}
	started time.Time
	err     error
	details any
}

// Add registers c under name, required: if it is not ready, the handler
// answers 503. Names are unique and not empty.
func (h *Handler) Add(name string, c Checker) error { return h.add(name, c, false) }

// AddOptional registers c under name, reported but not required: if it is
// not ready, the status is "degraded" and the answer still 200. Use it for
// what the service can do without: a broker whose events the outbox or
// the spool keep meanwhile, so that a broker outage does not take every
// replica out of the load balancer.
func (h *Handler) AddOptional(name string, c Checker) error { return h.add(name, c, true) }

func (h *Handler) add(name string, c Checker, optional bool) error {
	switch {
	case name == "":
		return errors.New("health: Add: name is empty")
	case c == nil:
		return fmt.Errorf("health: Add %q: checker is nil", name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if slices.ContainsFunc(h.parts, func(p *part) bool { return p.name == name }) {
		return fmt.Errorf("health: Add %q: name already added", name)
	}
	h.parts = append(h.parts, &part{name: name, c: c, optional: optional})
	return nil
}

func (h *Handler) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return DefaultTimeout
}

// Check asks every part, concurrently, and returns by ctx's deadline or
// the Timeout, whichever comes first. With details, it also collects each
// Reporter's details. It is what the handler serves; call it to log or
// export the same document.
func (h *Handler) Check(ctx context.Context, details bool) Report {
	ctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	h.mu.Lock()
	parts := slices.Clone(h.parts)
	h.mu.Unlock()

	rep := Report{Status: StatusOK, Time: time.Now().UTC(), Parts: make(map[string]PartReport, len(parts))}
	flights := make([]*flight, len(parts))
	for i, p := range parts {
		flights[i] = p.join(details, h.timeout())
	}
	for i, p := range parts {
		f := flights[i]
		pr := PartReport{Status: StatusOK, Optional: p.optional}
		if f.wait(ctx) {
			if f.err != nil {
				pr.Status, pr.Error = StatusUnavailable, errorText(f.err)
			}
			pr.Details = f.details
		} else {
			pr.Status = StatusUnavailable
			pr.Error = fmt.Sprintf("no answer within %v (checking since %s)", h.timeout(), f.started.UTC().Format(time.RFC3339))
		}
		if pr.Status != StatusOK {
			switch {
			case !p.optional:
				rep.Status = StatusUnavailable
			case rep.Status == StatusOK:
				rep.Status = StatusDegraded
			}
		}
		rep.Parts[p.name] = pr
	}
	return rep
}

// wait reports whether f finished before ctx ended; a check that has
// finished counts even when ctx has ended too (the parts are waited for
// one after the other, under one deadline).
func (f *flight) wait(ctx context.Context) bool {
	select {
	case <-f.done:
		return true
	case <-ctx.Done():
		select {
		case <-f.done:
			return true
		default:
			return false
		}
	}
}

// join returns the part's check in flight, or starts one. The check gets
// a ctx of its own, bounded by timeout, so that a request going away does
// not fail the others sharing it.
func (p *part) join(details bool, timeout time.Duration) *flight {
	i := 0
	if details {
		i = 1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.flights[i]; f != nil {
		return f
	}
	f := &flight{done: make(chan struct{}), started: time.Now()}
	p.flights[i] = f
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		defer func() {
			if r := recover(); r != nil {
				f.err = fmt.Errorf("health check panicked: %v", r)
			}
			p.mu.Lock()
			p.flights[i] = nil
			p.mu.Unlock()
			close(f.done)
		}()
		f.err = p.c.Health(ctx)
		if r, ok := p.c.(Reporter); ok && details {
			f.details = r.Report(ctx)
		}
	}()
	return f
}

// errorText is err as one bounded line.
func errorText(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(s) > maxErrorLen {
		s = s[:maxErrorLen] + "..."
	}
	return s
}

// ServeHTTP serves GET (and HEAD) /healthz and /status; any other path is
// 404. Mount it at both paths, or serve it on a port of its own:
//
//	mux.Handle("/healthz", h)
//	mux.Handle("/status", h)
//
// To serve them at other paths, use [Handler.HealthHandler] and
// [Handler.StatusHandler].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		h.serveHealth(w, r)
	case "/status":
		h.serveStatus(w, r)
	default:
		http.NotFound(w, r)
	}
}

// HealthHandler serves the text answer of /healthz at any path: 200 "ok"
// (or "degraded" and why), 503 "unavailable" and why, one line per part
// that is not ready.
func (h *Handler) HealthHandler() http.Handler { return http.HandlerFunc(h.serveHealth) }

// StatusHandler serves the JSON [Report] of /status at any path, with
// every part's details: 200, or 503 when a required part is not ready.
func (h *Handler) StatusHandler() http.Handler { return http.HandlerFunc(h.serveStatus) }

func (h *Handler) serveHealth(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r) {
		return
	}
	rep := h.Check(r.Context(), false)
	var b strings.Builder
	b.WriteString(rep.Status)
	b.WriteByte('\n')
	names := make([]string, 0, len(rep.Parts))
	for name := range rep.Parts {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if p := rep.Parts[name]; p.Status != StatusOK {
			fmt.Fprintf(&b, "%s: %s\n", name, p.Error)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	write(w, r, code(rep), []byte(b.String()))
}

func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r) {
		return
	}
	rep := h.Check(r.Context(), true)
	body, err := json.MarshalIndent(rep, "", "  ")
	if err != nil { // a Reporter's details encoding/json cannot write
		for name, p := range rep.Parts {
			if _, derr := json.Marshal(p.Details); derr != nil {
				p.Details = "details not encodable as JSON: " + errorText(derr)
				rep.Parts[name] = p
			}
		}
		body, _ = json.MarshalIndent(rep, "", "  ")
	}
	w.Header().Set("Content-Type", "application/json")
	write(w, r, code(rep), append(body, '\n'))
}

func code(rep Report) int {
	if rep.Status == StatusUnavailable {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// allowed answers 405 to anything but GET and HEAD.
func allowed(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func write(w http.ResponseWriter, r *http.Request, code int, body []byte) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
