package lanes

import (
	"fmt"
	"sort"
)

// Watermark follows one ordered stream whose items are numbered in
// increasing order (a Kafka partition's offsets, gaps allowed) and finish
// in any order, as they do on lanes: it says up to where the stream may be
// committed, the lowest number not yet finished. Not safe for concurrent
// use.
type Watermark struct {
	pending []mark // added and not yet below the commit point, in order
	next    int64  // the commit point when pending is empty
	started bool
}

type mark struct {
	n    int64
	done bool
}

// Add records n as started. Numbers must be added in increasing order.
func (w *Watermark) Add(n int64) error {
	last := w.next - 1
	if len(w.pending) > 0 {
		last = w.pending[len(w.pending)-1].n
	}
	if w.started && n <= last {
		return fmt.Errorf("lanes: Watermark.Add(%d) after %d: numbers must increase", n, last)
	}
	w.started = true
	w.pending = append(w.pending, mark{n: n})
	return nil
}

// Done records n as finished and returns the commit point: the lowest
// number started and not finished, or one past the highest started when
// every one finished. moved says whether it changed. A number never added,
// or already below the commit point, changes nothing.
func (w *Watermark) Done(n int64) (commit int64, moved bool) {
	i := sort.Search(len(w.pending), func(i int) bool { return w.pending[i].n >= n })
	if i == len(w.pending) || w.pending[i].n != n {
		return w.Commit(), false
	}
	w.pending[i].done = true
	k := 0
	for k < len(w.pending) && w.pending[k].done {
		k++
	}
	if k == 0 {
		return w.Commit(), false
	}
	w.next = w.pending[k-1].n + 1
	clear(w.pending[:k])
	w.pending = w.pending[k:]
	return w.Commit(), true
}

// Commit is the commit point: the lowest number started and not finished,
// or one past the highest started when every one finished (0 before any).
func (w *Watermark) Commit() int64 {
	if len(w.pending) > 0 {
		return w.pending[0].n
	}
	return w.next
}

// Pending is how many numbers were started and not yet passed by the
// commit point (finished ones above an unfinished one included).
func (w *Watermark) Pending() int { return len(w.pending) }
