package deadletter

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"

	"github.com/domainevents/domainevents/broker"
)

// Torn describes a damaged record at the tail of a segment, skipped.
type Torn struct {
	// File is the segment's path.
	File string
	// Offset is where the damaged record starts in File.
	Offset int64
	// Bytes is how much was skipped, from Offset to the end of File.
	Bytes int64
}

// ScanReport says what a scan found.
type ScanReport struct {
	// Segments is how many segment files were read.
	Segments int
	// Entries is how many whole entries they hold.
	Entries int
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
	if err != nil {
		return ScanReport{}, err
	}
	return scanSegments(segs, fn)
}

// Inspect reads the spool in dir without opening it, so without its lock:
// what an operator runs while the owning service is up. It calls fn for
// every entry, oldest first, as [Spool.Scan] does; a segment the owner
// removes meanwhile (a replay finished it) is skipped, and the record the
// owner is writing may show as torn.
func Inspect(dir string, fn func(broker.DeadLetter) error) (ScanReport, error) {
	segs, err := (&Spool{dir: dir}).segments()
	if err != nil {
		return ScanReport{}, err
	}
	return scanSegments(segs, fn)
}

func scanSegments(segs []segment, fn func(broker.DeadLetter) error) (ScanReport, error) {
	var rep ScanReport
	for _, seg := range segs {
		entries, torn, err := readSegment(seg.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // replayed and removed while we read
		}
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

// Entries returns the number of entries the spool holds (torn records
// aside).
func (s *Spool) Entries() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries
}

// countRecords counts the records of a segment a replay would read: those
// complete and whole (their checksum holds), up to the first that is not.
func countRecords(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var n int64
	for off := int64(0); int64(len(data))-off >= headerLen; n++ {
		end := off + headerLen + int64(binary.BigEndian.Uint32(data[off:]))
		if end > int64(len(data)) || crc32.Checksum(data[off+headerLen:end], castagnoli) != binary.BigEndian.Uint32(data[off+4:]) {
			break
		}
		off = end
	}
	return n
}
