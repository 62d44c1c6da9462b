package backoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestCeiling(t *testing.T) {
	base, maxD := 100*time.Millisecond, time.Second
	want := []time.Duration{100e6, 200e6, 400e6, 800e6, 1e9, 1e9}
	for i, w := range want {
		assert.Equal(t, w, Ceiling(i, base, maxD), "attempt %d", i)
	}
	assert.Equal(t, maxD, Ceiling(200, base, maxD), "no overflow")
	assert.Equal(t, base, Ceiling(-1, base, maxD))
}

func TestJitteredBounds(t *testing.T) {
	for attempt := range 40 {
		for range 50 {
			d := Jittered(attempt, 100, 1000)
			assert.GreaterOrEqual(t, int(d), 100)
			assert.LessOrEqual(t, int(d), 1100)
		}
	}
}
