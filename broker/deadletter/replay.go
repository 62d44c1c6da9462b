package deadletter

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"sync"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// ReplayOptions tunes [Spool.Replay].
type ReplayOptions struct {
	// Workers publishing in parallel (entries of one key stay in order on
	// one worker). Default 16.
	Workers int
	// Progress, if set, is called after each segment and at the end.
	Progress func(ReplayResult)
}

// ReplayResult counts a replay's outcome.
type ReplayResult struct {
	// Total entries found in the segments replayed.
	Total int
	// Published: confirmed by the broker and removed from the spool.
	Published int
	// Failed: not confirmed; kept in the spool (with the new reason).
	Failed int
	// Torn records skipped.
	Torn []Torn
}

// Replay re-publishes every entry through b (use the plain adapter, not a
// retry wrapper that dead-letters into this spool) and removes the entries
// the broker confirmed. Entries that fail again stay where they were, with
// their reason and attempt count updated; so does every later entry of the
// same key in this replay, not even tried, so that one key's entries keep
// their spooled order across replays. Entries spooled while Replay runs
// wait for the next one. A replay that ctx stops leaves what it did not
// confirm as it was.
//
// It is idempotent and crash-safe: a segment is replaced (atomically, by
// rename) by one holding only its unconfirmed entries, or deleted, only
// after each of its entries was confirmed or written there (fsync'd), so a
// crash mid-replay loses nothing, and replaying again may publish some
// entries a second time (consumers deduplicate on the message id). It
// fails after Close.
func (s *Spool) Replay(ctx context.Context, b broker.Broker, opts ReplayOptions) (ReplayResult, error) {
	s.replayMu.Lock()
	defer s.replayMu.Unlock()
	if opts.Workers < 1 {
		opts.Workers = 16
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ReplayResult{}, fmt.Errorf("deadletter: replay %s: %w", s, broker.ErrClosed)
	}
	err := s.closeActiveLocked() // seal it: what it holds is replayed now, new Puts go elsewhere
	var segs []segment
	if err == nil {
		segs, err = s.segments()
	}
	s.mu.Unlock()
	var res ReplayResult
	if err != nil {
		return res, err
	}
	blocked := map[string]string{} // key -> the id of its first entry that failed
	for _, seg := range segs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		entries, torn, err := readSegment(seg.path)
		if err != nil {
			return res, err
		}
		if torn != nil {
			res.Torn = append(res.Torn, *torn)
		}
		res.Total += len(entries)
		failed := publishAll(ctx, b, entries, opts.Workers, blocked)
		var recs [][]byte
		for _, e := range failed {
			rec, err := encode(e)
			if err != nil {
				return res, err
			}
			recs = append(recs, rec)
		}
		if err := s.rewrite(seg, len(entries), recs); err != nil {
			return res, err
		}
		res.Published += len(entries) - len(failed)
		res.Failed += len(failed)
		if opts.Progress != nil {
			opts.Progress(res)
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
	}
	return res, nil
}

// rewrite replaces a replayed segment with one holding only its entries
// that were not confirmed (recs), in place, so that they keep their
// position before every later segment; or deletes it when all were. The
// new file is fsync'd before it replaces the old one by rename: at every
// moment one of the two is complete.
func (s *Spool) rewrite(seg segment, replayed int, recs [][]byte) error {
	var size int64
	if len(recs) == 0 {
		if err := os.Remove(seg.path); err != nil {
			return fmt.Errorf("deadletter: remove replayed segment: %w", err)
		}
	} else {
		tmp := seg.path + ".tmp"
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
		if err != nil {
			return fmt.Errorf("deadletter: rewrite %s (kept, replay again): %w", seg.path, err)
		}
		for _, rec := range recs {
			if _, err = f.Write(rec); err != nil {
				break
			}
			size += int64(len(rec))
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, seg.path)
		}
		if err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("deadletter: rewrite %s (kept, replay again): %w", seg.path, err)
		}
		s.syncDir() // make the rename durable
	}
	s.mu.Lock()
	s.total += size - seg.size
	s.entries -= int64(replayed - len(recs))
	entries := s.entries
	s.mu.Unlock()
	s.observeDepth(entries)
	return nil
}

// publishAll publishes entries with workers, keeping one key's entries in
// order on one worker, and returns those not confirmed, updated. An entry
// whose key failed earlier in this replay (blocked) is not tried; nor is
// one when ctx has ended, and neither has its reason changed.
func publishAll(ctx context.Context, b broker.Broker, entries []broker.DeadLetter, workers int, blocked map[string]string) []broker.DeadLetter {
	lanes := make([][]int, workers)
	for i, e := range entries {
		h := fnv.New32a()
		h.Write([]byte(e.Message.Key))
		w := int(h.Sum32() % uint32(workers))
		lanes[w] = append(lanes[w], i)
	}
	errs := make([]error, len(entries))
	tried := make([]bool, len(entries))
	var mu sync.Mutex // guards blocked
	var wg sync.WaitGroup
	for _, lane := range lanes {
		if len(lane) == 0 {
			continue
		}
		wg.Go(func() {
			for _, i := range lane {
				m := entries[i].Message
				mu.Lock()
				_, isBlocked := blocked[m.Key]
				mu.Unlock()
				if (isBlocked && m.Key != "") || ctx.Err() != nil {
					errs[i] = errNotTried
					continue
				}
				errs[i], tried[i] = b.Publish(ctx, m), true
				if errs[i] != nil && m.Key != "" {
					mu.Lock()
					if _, ok := blocked[m.Key]; !ok {
						blocked[m.Key] = m.ID
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	var failed []broker.DeadLetter
	now := time.Now()
	for i, err := range errs {
		if err == nil {
			continue
		}
		e := entries[i]
		if tried[i] && ctx.Err() == nil { // a real failure: say why; a stopped or skipped one stays as it was
			e.Reason = err.Error()
			e.Category = broker.Category(err)
			e.Attempts++
			e.LastFailure = now
		}
		failed = append(failed, e)
	}
	return failed
}

// errNotTried marks an entry a replay skipped: its key failed earlier, or
// the replay was stopped.
var errNotTried = errors.New("not tried")
