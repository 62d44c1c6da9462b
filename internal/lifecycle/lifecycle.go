// Package lifecycle holds the close-once idiom every closeable part of the
// module shares.
package lifecycle

import "sync"

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
