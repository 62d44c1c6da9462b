package deadletter

import (
	"context"
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
// the broker confirmed. Entries that fail again stay, with their reason and
// attempt count updated. Entries spooled while Replay runs wait for the
// next one.
//
// It is idempotent and crash-safe: a segment file is deleted only after
// each of its entries was confirmed or re-spooled (fsync'd), so a crash
// mid-replay loses nothing, and replaying again may publish some entries a
// second time (consumers deduplicate on the message id). If ctx ends, the
// segments not yet replayed are left as they are.
func (s *Spool) Replay(ctx context.Context, b broker.Broker, opts ReplayOptions) (ReplayResult, error) {
	s.replayMu.Lock()
	defer s.replayMu.Unlock()
	if opts.Workers < 1 {
		opts.Workers = 16
	}
	s.mu.Lock()
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
		failed := publishAll(ctx, b, entries, opts.Workers)
		var recs [][]byte
		for _, e := range failed {
			rec, err := encode(e)
			if err != nil {
				return res, err
			}
			recs = append(recs, rec)
		}
		if err := s.respool(seg, len(entries), recs); err != nil {
			return res, err
		}
		res.Published += len(entries) - len(failed)
		res.Failed += len(failed)
		if opts.Progress != nil {
			opts.Progress(res)
		}
	}
	return res, nil
}

// respool appends the failed entries of a replayed segment, fsyncs them,
// then deletes the segment: every entry of it is then confirmed or safe
// again.
func (s *Spool) respool(seg segment, replayed int, recs [][]byte) error {
	s.mu.Lock()
	s.total -= seg.size // the failures replace the segment: count it out while appending them
	var last uint64
	for _, rec := range recs {
		seq, err := s.appendLocked(rec)
		if err != nil {
			s.total += seg.size
			s.mu.Unlock()
			return fmt.Errorf("deadletter: re-spool failed entries of %s (segment kept, replay again): %w", seg.path, err)
		}
		last = seq
	}
	s.mu.Unlock()
	if last > 0 {
		if err := s.syncUpTo(last); err != nil {
			s.mu.Lock()
			s.total += seg.size
			s.mu.Unlock()
			return fmt.Errorf("deadletter: re-spool failed entries of %s (segment kept, replay again): %w", seg.path, err)
		}
	}
	if err := os.Remove(seg.path); err != nil {
		s.mu.Lock()
		s.total += seg.size
		s.mu.Unlock()
		return fmt.Errorf("deadletter: remove replayed segment: %w", err)
	}
	s.mu.Lock()
	s.entries -= int64(replayed) // the failures were counted again as they were appended
	entries := s.entries
	s.mu.Unlock()
	s.observeDepth(entries)
	return nil
}

// publishAll publishes entries with workers, keeping one key's entries in
// order on one worker, and returns those that failed, updated.
func publishAll(ctx context.Context, b broker.Broker, entries []broker.DeadLetter, workers int) []broker.DeadLetter {
	lanes := make([][]int, workers)
	for i, e := range entries {
		h := fnv.New32a()
		h.Write([]byte(e.Message.Key))
		w := int(h.Sum32() % uint32(workers))
		lanes[w] = append(lanes[w], i)
	}
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for _, lane := range lanes {
		if len(lane) == 0 {
			continue
		}
		wg.Go(func() {
			for _, i := range lane {
				errs[i] = b.Publish(ctx, entries[i].Message)
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
		e.Reason = err.Error()
		e.Category = broker.Category(err)
		e.Attempts++
		e.LastFailure = now
		failed = append(failed, e)
	}
	return failed
}
