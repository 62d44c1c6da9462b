package lanes

import "fmt"

// Watermark follows one ordered stream whose items are numbered in
// increasing order (a Kafka partition's offsets, gaps allowed) and finish
// in any order, as they do on lanes: it says up to where the stream may be
// committed, the lowest number not yet finished. Not safe for concurrent
// use. It allocates only while the numbers pending grow past any earlier
// high: the marks passed are reused.
type Watermark struct {
	marks   []mark // marks[head:] are pending: added and not yet below the commit point, in order
	head    int
	next    int64 // the commit point when none is pending
	started bool
}

type mark struct {
	n    int64
	done bool
}

// Add records n as started. Numbers must be added in increasing order.
func (w *Watermark) Add(n int64) error {
	last := w.next - 1
	if w.head < len(w.marks) {
		last = w.marks[len(w.marks)-1].n
	}
	if w.started && n <= last {
		return fmt.Errorf("lanes: Watermark.Add(%d) after %d: numbers must increase", n, last)
	}
	w.started = true
	if len(w.marks) == cap(w.marks) && w.head >= len(w.marks)/2 && w.head > 0 {
		// Full, half of it passed: slide the pending ones to the front
		// (amortized: at least as many Adds since the last slide).
		k := copy(w.marks, w.marks[w.head:])
		w.marks = w.marks[:k]
		w.head = 0
	}
	w.marks = append(w.marks, mark{n: n})
	return nil
}

// Done records n as finished and returns the commit point: the lowest
// number started and not finished, or one past the highest started when
// every one finished. moved says whether it changed. A number never added,
// or already below the commit point, changes nothing.
func (w *Watermark) Done(n int64) (commit int64, moved bool) {
	p := w.marks[w.head:]
	i := 0
	if len(p) == 0 || p[0].n != n { // the head is the common case
		lo, hi := 0, len(p)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if p[m].n < n {
				lo = m + 1
			} else {
				hi = m
			}
		}
		i = lo
	}
	if i == len(p) || p[i].n != n {
		return w.Commit(), false
	}
	p[i].done = true
	k := 0
	for k < len(p) && p[k].done {
		k++
	}
	if k == 0 {
		return w.Commit(), false
	}
	w.next = p[k-1].n + 1
	w.head += k
	if w.head == len(w.marks) { // none pending: start again at the front
		w.marks = w.marks[:0]
		w.head = 0
	}
	return w.Commit(), true
}

// Commit is the commit point: the lowest number started and not finished,
// or one past the highest started when every one finished (0 before any).
func (w *Watermark) Commit() int64 {
	if w.head < len(w.marks) {
		return w.marks[w.head].n
	}
	return w.next
}

// Pending is how many numbers were started and not yet passed by the
// commit point (finished ones above an unfinished one included).
func (w *Watermark) Pending() int { return len(w.marks) - w.head }
