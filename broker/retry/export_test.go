package retry

import (
	"context"
	"time"
)

// SetClock replaces the clock and the wait between attempts: tests count
// and check delays without sleeping.
func (b *Broker) SetClock(now func() time.Time, sleep func(context.Context, time.Duration) error) {
	b.now, b.sleep = now, sleep
}

// SetJitter replaces the random draw in [0, d].
func (b *Broker) SetJitter(fn func(time.Duration) time.Duration) { b.jit = fn }
