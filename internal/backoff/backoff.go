package backoff

import (
	"math/rand/v2"
	"time"
)

// Ceiling is the largest wait before retry number attempt (from 0):
// base*2^attempt, capped at maxDelay.
func Ceiling(attempt int, base, maxDelay time.Duration) time.Duration {
	if attempt < 0 {
		attempt = 0
	}
	if attempt < 32 {
		if e := base << attempt; e > 0 && e < maxDelay {
			return e
		}
	}
	return maxDelay
}

// Jittered is base plus a uniform draw in [0, Ceiling]: full jitter that
// never hammers a broker faster than base.
func Jittered(attempt int, base, maxDelay time.Duration) time.Duration {
	return base + rand.N(Ceiling(attempt, base, maxDelay)+1)
}
