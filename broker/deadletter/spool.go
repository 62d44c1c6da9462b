package deadletter

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// ErrFull matches the error of a Put that would grow the spool past its
// bound.
var ErrFull = errors.New("dead-letter spool full")

// ErrLocked matches the error of [OpenSpool] when another process (or
// another Spool of this one) owns the directory: a [*LockedError].
var ErrLocked = errors.New("dead-letter spool in use")

// LockedError says who owns a spool directory.
type LockedError struct {
	// Dir is the spool directory.
	Dir string
	// PID is the owner's process id, 0 if unknown.
	PID int
}

// Error reads like: deadletter: spool directory /var/spool/orders is in
// use by process 4242: one process owns a spool (replay it from that
// process, or stop it first).
func (e *LockedError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("deadletter: spool directory %s is in use by %s: one process owns a spool (replay it from that process, or stop it first)", e.Dir, who)
}

// Is reports whether target is [ErrLocked].
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// lockName is the file in a spool directory that its owner holds locked.
const lockName = "LOCK"

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
// Safe for concurrent use. One process owns a directory: [OpenSpool] locks
// it until [Spool.Close], and a second opener gets [ErrLocked].
type Spool struct {
	dir        string
	unlock     func() error
	observer   broker.Observer
	maxBytes   int64
	segBytes   int64
	mu         sync.Mutex // guards the fields below and the active file
	active     *os.File
	activeSize int64
	nextSeq    uint64
	total      int64  // bytes in all segments
	entries    int64  // records in all segments (torn tails aside)
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

// WithObserver reports the spool's depth (entries) to obs after every Put
// and replay, as broker.ObservedSpoolDepth. Default: none.
func WithObserver(obs broker.Observer) SpoolOption {
	return func(s *Spool) error {
		if obs == nil {
			return errors.New("WithObserver: observer is nil")
		}
		s.observer = obs
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

// OpenSpool opens (creating it if needed) the spool in dir and locks it
// for this Spool until Close: while it is open, another OpenSpool of dir,
// in this process or another, fails with an error matching [ErrLocked]
// that names the owner's pid. The lock dies with the process (kill -9
// included). Existing segments are kept for [Spool.Scan] and
// [Spool.Replay]; new entries go to a new segment, never after a possibly
// torn tail.
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
	if s.unlock, err = lockDir(dir); err != nil {
		if errors.Is(err, ErrLocked) {
			return nil, err
		}
		return nil, fmt.Errorf("deadletter: lock spool directory %s: %w", dir, err)
	}
	segs, err := s.segments()
	if err != nil {
		_ = s.unlock()
		return nil, err
	}
	for _, seg := range segs {
		s.total += seg.size
		s.entries += countRecords(seg.path)
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
	entries := s.entries
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.syncUpTo(seq); err != nil {
		return err
	}
	s.observeDepth(entries)
	return nil
}

// observeDepth reports the spool's depth to the observer, if any.
func (s *Spool) observeDepth(entries int64) {
	if s.observer != nil {
		s.observer.Observe(context.Background(), broker.Observation{Kind: broker.ObservedSpoolDepth,
			Component: "spool", Destination: s.dir, Value: float64(entries)})
	}
}

// appendLocked writes rec (not yet synced) and returns its sequence number.
func (s *Spool) appendLocked(rec []byte) (uint64, error) {
	if s.closed {
		return 0, fmt.Errorf("deadletter: %s: %w", s, broker.ErrClosed)
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
	s.entries++
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

// syncDir fsyncs the spool's directory, which makes a file created or
// renamed in it durable (best effort: a failure leaves the name to the
// file system's own flush).
func (s *Spool) syncDir() {
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
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
	s.syncDir() // make the new file's name durable
	s.nextSeq++
	s.active, s.activeSize = f, 0
	return nil
}

// Close syncs and releases the active segment. Later Puts fail.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.closeActiveLocked()
	if uerr := s.unlock(); err == nil && uerr != nil {
		err = fmt.Errorf("deadletter: unlock %s: %w", s.dir, uerr)
	}
	return err
}
