package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is exponential backoff with full jitter: the wait before retry n
// (n counts from 1) is a uniform draw in [0, Ceiling(n)], where Ceiling(n)
// is min(Max, Initial·2^(n-1)). Max is therefore the largest wait there can
// be. Every retry loop of the module uses it: the RabbitMQ reconnect loops,
// Kafka's connect and consume loops and handler retries, and the retry
// layer.
type Policy struct {
	Initial, Max time.Duration
}

// Ceiling is the largest wait before retry n (from 1): Initial·2^(n-1),
// capped at Max.
func (p Policy) Ceiling(n int) time.Duration {
	n--
	if n < 0 {
		n = 0
	}
	if n < 32 {
		if e := p.Initial << n; e > 0 && e < p.Max {
			return e
		}
	}
	return p.Max
}

// Delay is the wait before retry n (from 1): uniform in [0, Ceiling(n)].
func (p Policy) Delay(n int) time.Duration {
	return rand.N(p.Ceiling(n) + 1)
}
