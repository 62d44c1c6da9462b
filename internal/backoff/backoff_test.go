package backoff

import (
	"testing"
	"time"
)

func TestCeiling(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100e6, 200e6, 400e6, 800e6, 1e9, 1e9}
	for i, w := range want {
		if got := p.Ceiling(i + 1); got != w {
			t.Errorf("Ceiling(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := p.Ceiling(200); got != p.Max {
		t.Errorf("Ceiling(200) = %v: overflow", got)
	}
	if got := p.Ceiling(0); got != p.Initial {
		t.Errorf("Ceiling(0) = %v, want Initial", got)
	}
}

func TestDelayNeverExceedsMax(t *testing.T) {
	p := Policy{Initial: 100, Max: 1000}
	for n := 1; n <= 40; n++ {
		for range 50 {
			if d := p.Delay(n); d < 0 || d > p.Ceiling(n) || d > p.Max {
				t.Fatalf("Delay(%d) = %v, outside [0, %v]", n, d, p.Ceiling(n))
			}
		}
	}
}
