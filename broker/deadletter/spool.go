package deadletter

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// ErrFull matches the error of a Put that would grow the spool past its
// bound.
var ErrFull = errors.New("dead-letter spool full")

// ErrCorrupt matches the error of a spool segment damaged somewhere other
// than its tail (a torn tail, what a crash leaves, is skipped and reported
// instead).
var ErrCorrupt = errors.New("dead-letter spool corrupt")

const (
	segPrefix = "spool-"
	segSuffix = ".log"
	headerLen = 8 // payload length (4) + CRC-32C of the payload (4)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Spool is a durable local dead-letter store: append-only segment files in
// one directory, each record length-prefixed and checksummed, fsync'd before
// Put returns. It is what holds events while the broker cannot be reached.
// Safe for concurrent use; one process per directory.
type Spool struct {
	dir        string
	maxBytes   int64
	segBytes   int64
	mu         sync.Mutex // guards the fields below and the active file
	active     *os.File
	activeSize int64
	nextSeq    uint64
	total      int64  // bytes in all segments
	written    uint64 // records written so far (their sequence numbers)
	closed     bool
	replayMu   sync.Mutex

	// Group commit: a Put returns once an fsync that started after its
	// write succeeded. Concurrent Puts share one fsync.
	syncMu  sync.Mutex // one fsync at a time; taken before mu, never after
	synced  atomic.Uint64
	syncErr atomic.Pointer[error] // sticky: after a failed fsync, nothing is promised
}

// SpoolOption configures [OpenSpool].
type SpoolOption func(*Spool) error

// WithMaxBytes bounds the spool's total size; Put fails with [ErrFull]
// beyond it. Default 1 GiB.
func WithMaxBytes(n int64) SpoolOption {
	return func(s *Spool) error {
		if n < 1 {
			return fmt.Errorf("WithMaxBytes(%d): must be positive", n)
		}
		s.maxBytes = n
		return nil
	}
}

// WithSegmentBytes sets the size at which a new segment file is started.
// Default 64 MiB.
func WithSegmentBytes(n int64) SpoolOption {
	return func(s *Spool) error {
		if n < 1 {
			return fmt.Errorf("WithSegmentBytes(%d): must be positive", n)
		}
		s.segBytes = n
		return nil
	}
}

// OpenSpool opens (creating it if needed) the spool in dir. Existing
// segments are kept for [Spool.Scan] and [Spool.Replay]; new entries go to a
// new segment, never after a possibly torn tail.
func OpenSpool(dir string, opts ...SpoolOption) (*Spool, error) {
	s := &Spool{dir: dir, maxBytes: 1 << 30, segBytes: 64 << 20}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, fmt.Errorf("deadletter: open spool: %w", err)
		}
	}
	if dir == "" {
		return nil, errors.New("deadletter: open spool: directory is empty")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("deadletter: cannot create spool directory %s: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("deadletter: spool directory %s is not writable: %w", dir, err)
	}
	_ = probe.Close()
	_ = os.Remove(probe.Name())
	segs, err := s.segments()
	if err != nil {
		return nil, err
	}
	for _, seg := range segs {
		s.total += seg.size
		s.nextSeq = max(s.nextSeq, seg.seq)
	}
	s.nextSeq++
	return s, nil
}

type segment struct {
	seq  uint64
	path string
	size int64
}

// segments lists the segment files in sequence order.
func (s *Spool) segments() ([]segment, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("deadletter: read spool directory %s: %w", s.dir, err)
	}
	var segs []segment
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, segPrefix) || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		var seq uint64
		if _, err := fmt.Sscanf(strings.TrimSuffix(strings.TrimPrefix(name, segPrefix), segSuffix), "%d", &seq); err != nil {
			continue
		}
		info, err := de.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		segs = append(segs, segment{seq: seq, path: filepath.Join(s.dir, name), size: info.Size()})
	}
	slices.SortFunc(segs, func(a, b segment) int { return int(a.seq) - int(b.seq) })
	return segs, nil
}

// Dir returns the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// String names the spool, for logs and errors.
func (s *Spool) String() string { return "spool " + s.dir }

// wireEntry is the stable on-disk form of a broker.DeadLetter.
type wireEntry struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Key          string            `json:"key,omitempty"`
	Body         []byte            `json:"body"`
	ContentType  string            `json:"contentType,omitempty"`
	Headers      map[string]string `json:"headers,omitempty"`
	Time         time.Time         `json:"time,omitzero"`
	Reason       string            `json:"reason"`
	Category     string            `json:"category"`
	Attempts     int               `json:"attempts"`
	FirstFailure time.Time         `json:"firstFailure,omitzero"`
	LastFailure  time.Time         `json:"lastFailure,omitzero"`
}

func encode(e broker.DeadLetter) ([]byte, error) {
	m := e.Message
	payload, err := json.Marshal(wireEntry{ID: m.ID, Name: m.Name, Key: m.Key, Body: m.Body, ContentType: m.ContentType,
		Headers: m.Headers, Time: m.Time, Reason: e.Reason, Category: e.Category, Attempts: e.Attempts,
		FirstFailure: e.FirstFailure, LastFailure: e.LastFailure})
	if err != nil {
		return nil, err
	}
	rec := make([]byte, headerLen+len(payload))
	binary.BigEndian.PutUint32(rec[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(rec[4:8], crc32.Checksum(payload, castagnoli))
	copy(rec[headerLen:], payload)
	return rec, nil
}

// Put appends e and fsyncs before returning. A spool that would exceed its
// bound returns an error matching [ErrFull]. Concurrent Puts share fsyncs
// (group commit); each still returns only once its own record is on disk.
func (s *Spool) Put(_ context.Context, e broker.DeadLetter) error {
	rec, err := encode(e)
	if err != nil {
		return fmt.Errorf("deadletter: encode entry %s: %w", e.Message.ID, err)
	}
	s.mu.Lock()
	seq, err := s.appendLocked(rec)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.syncUpTo(seq)
}

// appendLocked writes rec (not yet synced) and returns its sequence number.
func (s *Spool) appendLocked(rec []byte) (uint64, error) {
	if s.closed {
		return 0, fmt.Errorf("deadletter: %s is closed", s)
	}
	if e := s.syncErr.Load(); e != nil {
		return 0, *e
	}
	if s.total+int64(len(rec)) > s.maxBytes {
		return 0, fmt.Errorf("%w: %s holds %d bytes, the limit is %d: replay it or raise WithMaxBytes", ErrFull, s, s.total, s.maxBytes)
	}
	if s.active == nil || s.activeSize >= s.segBytes {
		if err := s.rotateLocked(); err != nil {
			return 0, err
		}
	}
	if _, err := s.active.Write(rec); err != nil {
		// A partial write leaves a torn record: start a new segment so that
		// later records stay readable.
		name := s.active.Name()
		_ = s.closeActiveLocked()
		return 0, fmt.Errorf("deadletter: write %s: %w", name, err)
	}
	s.activeSize += int64(len(rec))
	s.total += int64(len(rec))
	s.written++
	return s.written, nil
}

// syncUpTo returns once record seq is on disk: an fsync that started after
// it was written succeeded, its own or another Put's.
func (s *Spool) syncUpTo(seq uint64) error {
	if s.synced.Load() >= seq {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if e := s.syncErr.Load(); e != nil {
		return *e
	}
	if s.synced.Load() >= seq {
		return nil
	}
	s.mu.Lock()
	f, target := s.active, s.written
	s.mu.Unlock()
	var err error
	if f == nil {
		err = errors.New("no open segment")
	} else {
		err = f.Sync()
	}
	if s.synced.Load() >= seq {
		return nil // a rotation synced and closed the file meanwhile
	}
	if err != nil {
		return s.failSync(fmt.Errorf("deadletter: fsync %s: %w", s, err))
	}
	s.raiseSynced(target)
	return nil
}

func (s *Spool) raiseSynced(to uint64) {
	for {
		cur := s.synced.Load()
		if cur >= to || s.synced.CompareAndSwap(cur, to) {
			return
		}
	}
}

// failSync makes the spool refuse further writes: after a failed fsync the
// kernel may have dropped the data, and a later fsync can succeed without it.
func (s *Spool) failSync(err error) error {
	err = fmt.Errorf("%w (the spool refuses writes from now on; reopen it)", err)
	s.syncErr.CompareAndSwap(nil, &err)
	return err
}

// closeActiveLocked syncs and closes the active segment, so that what was
// written to it counts as synced.
func (s *Spool) closeActiveLocked() error {
	if s.active == nil {
		return nil
	}
	f, written := s.active, s.written
	s.active = nil
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return s.failSync(fmt.Errorf("deadletter: fsync %s: %w", f.Name(), err))
	}
	s.raiseSynced(written)
	if err := f.Close(); err != nil {
		return fmt.Errorf("deadletter: close segment: %w", err)
	}
	return nil
}

func (s *Spool) rotateLocked() error {
	if err := s.closeActiveLocked(); err != nil {
		return err
	}
	seq := s.nextSeq
	path := filepath.Join(s.dir, fmt.Sprintf("%s%020d%s", segPrefix, seq, segSuffix))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("deadletter: create segment: %w", err)
	}
	if d, err := os.Open(s.dir); err == nil { // make the new file's name durable
		_ = d.Sync()
		_ = d.Close()
	}
	s.nextSeq++
	s.active, s.activeSize = f, 0
	return nil
}

// Torn describes a damaged record at the tail of a segment, skipped.
type Torn struct {
	File   string
	Offset int64
	Bytes  int64
}

// ScanReport says what a scan found.
type ScanReport struct {
	Segments int
	Entries  int
	// Torn lists records cut short at a segment's tail (what a crash during
	// a write leaves): at most one per segment.
	Torn []Torn
}

// readSegment decodes every record of one segment file.
func readSegment(path string) ([]broker.DeadLetter, *Torn, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("deadletter: read %s: %w", path, err)
	}
	var out []broker.DeadLetter
	off := int64(0)
	size := int64(len(data))
	for off < size {
		if size-off < headerLen {
			return out, &Torn{File: path, Offset: off, Bytes: size - off}, nil
		}
		n := int64(binary.BigEndian.Uint32(data[off:]))
		sum := binary.BigEndian.Uint32(data[off+4:])
		end := off + headerLen + n
		if end > size {
			return out, &Torn{File: path, Offset: off, Bytes: size - off}, nil
		}
		payload := data[off+headerLen : end]
		if crc32.Checksum(payload, castagnoli) != sum {
			if end == size {
				return out, &Torn{File: path, Offset: off, Bytes: size - off}, nil
			}
			return out, nil, fmt.Errorf("%w: %s: record at offset %d fails its checksum and is not the last one", ErrCorrupt, path, off)
		}
		var w wireEntry
		if err := json.Unmarshal(payload, &w); err != nil {
			return out, nil, fmt.Errorf("%w: %s: record at offset %d: %v", ErrCorrupt, path, off, err)
		}
		out = append(out, broker.DeadLetter{
			Message: broker.Message{ID: w.ID, Name: w.Name, Key: w.Key, Body: w.Body, ContentType: w.ContentType,
				Headers: w.Headers, Time: w.Time},
			Reason: w.Reason, Category: w.Category, Attempts: w.Attempts,
			FirstFailure: w.FirstFailure, LastFailure: w.LastFailure,
		})
		off = end
	}
	return out, nil, nil
}

// Scan calls fn for every entry, oldest first, and reports torn tails. A
// corrupted segment is an error matching [ErrCorrupt] naming the file and
// offset; fn returning an error stops the scan with it. A scan that races a
// Put may report the record being written as torn.
func (s *Spool) Scan(fn func(broker.DeadLetter) error) (ScanReport, error) {
	s.mu.Lock()
	segs, err := s.segments()
	s.mu.Unlock()
	var rep ScanReport
	if err != nil {
		return rep, err
	}
	for _, seg := range segs {
		entries, torn, err := readSegment(seg.path)
		if err != nil {
			return rep, err
		}
		rep.Segments++
		if torn != nil {
			rep.Torn = append(rep.Torn, *torn)
		}
		for _, e := range entries {
			rep.Entries++
			if err := fn(e); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// Len returns the number of bytes the spool holds.
func (s *Spool) Len() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

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
		if err := s.respool(seg, recs); err != nil {
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
func (s *Spool) respool(seg segment, recs [][]byte) error {
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

// Close syncs and releases the active segment. Later Puts fail.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.closeActiveLocked()
}
