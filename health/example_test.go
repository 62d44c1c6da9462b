package health_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/domainevents/domainevents/health"
)

// component stands for the Publisher of domainevents.Open, a subscriber or
// a relay: anything with a Health method.
type component struct{ err error }

func (b component) Health(context.Context) error { return b.err }

func Example() {
	h := &health.Handler{}
	_ = h.Add("publisher", component{})
	_ = h.Add("subscriber", component{errors.New("rabbitmq: subscribe: broker unavailable: not connected")})
	srv := httptest.NewServer(h) // a service: mux.Handle("/healthz", h); mux.Handle("/status", h)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.StatusCode, "\n", string(body))
	// Output:
	// 503
	// unavailable
	// subscriber: rabbitmq: subscribe: broker unavailable: not connected
}
