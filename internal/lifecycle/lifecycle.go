// Package lifecycle holds the close-once idiom every closeable part of the
// module shares.
package lifecycle

import (
	"context"
	"sync"
	"time"
)

// Closing marks the start of a Close. The first call of Begin returns true
// and closes the channel Done returns; later calls return false (a second
// Close returns nil). The zero value is ready to use.
type Closing struct {
	once  sync.Once
	mu    sync.Mutex
	ch    chan struct{}
	begun bool
}

// Begin reports whether this is the first call: true for the Close that
// does the work.
func (c *Closing) Begin() bool {
	first := false
	c.once.Do(func() {
		first = true
		c.mu.Lock()
		c.begun = true
		if c.ch == nil {
			c.ch = make(chan struct{})
		}
		close(c.ch)
		c.mu.Unlock()
	})
	return first
}

// Begun reports whether Begin has been called.
func (c *Closing) Begun() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.begun
}

// Done is closed once Begin has been called.
func (c *Closing) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

// Cutoff returns a channel closed when a Close with ctx should stop
// waiting for the work in flight and keep the rest of its time to store
// what is left: a quarter of ctx's remaining time before its deadline, at
// most a second; at once when ctx ends; never when ctx has no deadline and
// does not end. Call stop to release the timer.
func Cutoff(ctx context.Context) (cut <-chan struct{}, stop func()) {
	c := make(chan struct{})
	var once sync.Once
	fire := func() { once.Do(func() { close(c) }) }
	after := context.AfterFunc(ctx, fire)
	var t *time.Timer
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		reserve := min(left/4, time.Second)
		t = time.AfterFunc(left-reserve, fire)
	}
	return c, func() {
		after()
		if t != nil {
			t.Stop()
		}
	}
}
