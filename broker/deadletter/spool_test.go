package deadletter_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/deadletter"
)

func entry(name string) broker.DeadLetter {
	m := brokertest.NewMessage(name)
	m.Headers = map[string]string{"trace": "t-1"}
	now := time.Now().UTC().Truncate(time.Millisecond)
	return broker.DeadLetter{Message: m, Reason: "rabbitmq: publish: broker unavailable: connection refused",
		Category: "unavailable", Attempts: 5, FirstFailure: now.Add(-time.Second), LastFailure: now}
}

func scanAll(t *testing.T, s *deadletter.Spool) ([]broker.DeadLetter, deadletter.ScanReport) {
	t.Helper()
	var got []broker.DeadLetter
	rep, err := s.Scan(func(e broker.DeadLetter) error { got = append(got, e); return nil })
	require.NoError(t, err)
	return got, rep
}

func TestSpoolRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := deadletter.OpenSpool(dir, deadletter.WithSegmentBytes(2048))
	require.NoError(t, err)
	var want []broker.DeadLetter
	for i := range 20 {
		e := entry(fmt.Sprintf("order.n%d", i))
		e.Message.Body = []byte{0, 1, 2, 255, byte(i)} // bodies are bytes, not text
		require.NoError(t, s.Put(context.Background(), e))
		want = append(want, e)
	}
	require.NoError(t, s.Close())

	s, err = deadletter.OpenSpool(dir)
	require.NoError(t, err)
	got, rep := scanAll(t, s)
	assert.Empty(t, rep.Torn)
	assert.Greater(t, rep.Segments, 1, "small segments rotate")
	require.Len(t, got, len(want))
	for i := range want {
		assert.Equal(t, want[i].Message.ID, got[i].Message.ID)
		assert.Equal(t, want[i].Message.Body, got[i].Message.Body)
		assert.Equal(t, want[i].Message.Headers, got[i].Message.Headers)
		assert.Equal(t, want[i].Message.Key, got[i].Message.Key)
		assert.Equal(t, want[i].Reason, got[i].Reason)
		assert.Equal(t, want[i].Attempts, got[i].Attempts)
		assert.True(t, want[i].LastFailure.Equal(got[i].LastFailure))
	}
}

func TestSpoolConcurrentPut(t *testing.T) {
	s, err := deadletter.OpenSpool(t.TempDir())
	require.NoError(t, err)
	defer s.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				assert.NoError(t, s.Put(context.Background(), entry("order.created")))
			}
		})
	}
	wg.Wait()
	got, _ := scanAll(t, s)
	assert.Len(t, got, 200)
}

func TestSpoolBounded(t *testing.T) {
	s, err := deadletter.OpenSpool(t.TempDir(), deadletter.WithMaxBytes(1500))
	require.NoError(t, err)
	defer s.Close()
	var err2 error
	n := 0
	for ; n < 100; n++ {
		if err2 = s.Put(context.Background(), entry("order.created")); err2 != nil {
			break
		}
	}
	require.Error(t, err2)
	assert.ErrorIs(t, err2, deadletter.ErrFull)
	assert.Contains(t, err2.Error(), "limit is 1500")
	got, _ := scanAll(t, s)
	assert.Len(t, got, n, "what was accepted is all there")
}

func TestSpoolBadPath(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(f, nil, 0o600))
	_, err := deadletter.OpenSpool(filepath.Join(f, "sub"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot create spool directory")

	if os.Geteuid() != 0 { // root may write anywhere
		ro := t.TempDir()
		require.NoError(t, os.Chmod(ro, 0o500))
		_, err = deadletter.OpenSpool(ro)
		assert.ErrorContains(t, err, "not writable")
	}
	_, err = deadletter.OpenSpool("")
	assert.Error(t, err)
}

func TestSpoolTornTailAndCorruption(t *testing.T) {
	dir := t.TempDir()
	s, err := deadletter.OpenSpool(dir)
	require.NoError(t, err)
	for range 3 {
		require.NoError(t, s.Put(context.Background(), entry("order.created")))
	}
	require.NoError(t, s.Close())
	segs, _ := filepath.Glob(filepath.Join(dir, "spool-*.log"))
	require.Len(t, segs, 1)
	data, err := os.ReadFile(segs[0])
	require.NoError(t, err)

	// Torn tail: cut the last record in half.
	require.NoError(t, os.WriteFile(segs[0], data[:len(data)-40], 0o600))
	s, err = deadletter.OpenSpool(dir)
	require.NoError(t, err)
	got, rep := scanAll(t, s)
	assert.Len(t, got, 2, "the records before the torn one are intact")
	require.Len(t, rep.Torn, 1)
	assert.Equal(t, segs[0], rep.Torn[0].File)

	// Corruption in the middle: a clear error naming file and offset.
	bad := append([]byte(nil), data...)
	bad[20] ^= 0xff
	require.NoError(t, os.WriteFile(segs[0], bad, 0o600))
	_, err = s.Scan(func(broker.DeadLetter) error { return nil })
	require.Error(t, err)
	assert.ErrorIs(t, err, deadletter.ErrCorrupt)
	assert.Contains(t, err.Error(), segs[0])
	assert.Contains(t, err.Error(), "offset 0")
}

// failing publishes everything except the ids in fail.
type failing struct {
	brokertest.Recorder
	mu   sync.Mutex
	fail map[string]bool
}

func (f *failing) Publish(ctx context.Context, m broker.Message) error {
	f.mu.Lock()
	bad := f.fail[m.ID]
	f.mu.Unlock()
	if bad {
		return &broker.Error{Op: "test", Kind: broker.ErrUnavailable, Err: errors.New("still down")}
	}
	return f.Recorder.Publish(ctx, m)
}

func TestReplayRemovesOnlyConfirmed(t *testing.T) {
	dir := t.TempDir()
	s, err := deadletter.OpenSpool(dir, deadletter.WithSegmentBytes(4096))
	require.NoError(t, err)
	defer s.Close()
	target := &failing{fail: map[string]bool{}}
	var ids []string
	for i := range 50 {
		e := entry("order.created")
		e.Message.Key = fmt.Sprintf("order-%d", i%5)
		require.NoError(t, s.Put(context.Background(), e))
		ids = append(ids, e.Message.ID)
		if i%10 == 0 {
			target.fail[e.Message.ID] = true
		}
	}
	var progress []deadletter.ReplayResult
	res, err := s.Replay(context.Background(), target, deadletter.ReplayOptions{Workers: 4,
		Progress: func(r deadletter.ReplayResult) { progress = append(progress, r) }})
	require.NoError(t, err)
	// The failing entries all have key order-0: its first failure blocks its
	// later entries (not tried), so that order-0 keeps its order.
	assert.Equal(t, 50, res.Total)
	assert.Equal(t, 40, res.Published)
	assert.Equal(t, 10, res.Failed)
	assert.NotEmpty(t, progress)

	// Per key, replay keeps the spool's order; nothing of order-0 overtook its failure.
	byKey := map[string][]string{}
	for _, m := range target.Messages() {
		byKey[m.Key] = append(byKey[m.Key], m.ID)
	}
	assert.Empty(t, byKey["order-0"])
	for i, id := range ids {
		key := fmt.Sprintf("order-%d", i%5)
		if key == "order-0" {
			continue
		}
		assert.Equal(t, id, byKey[key][0], "order of key %s", key)
		byKey[key] = byKey[key][1:]
	}

	left, _ := scanAll(t, s)
	require.Len(t, left, 10, "only the unconfirmed stay")
	var stayed []string
	for _, e := range left {
		stayed = append(stayed, e.Message.ID)
		assert.Equal(t, "order-0", e.Message.Key)
		if target.fail[e.Message.ID] && e.Message.ID == ids[0] {
			assert.Equal(t, 6, e.Attempts, "tried again: one more attempt")
			assert.Contains(t, e.Reason, "still down")
		}
		if !target.fail[e.Message.ID] {
			assert.Equal(t, 5, e.Attempts, "blocked, not tried: unchanged")
			assert.NotContains(t, e.Reason, "still down")
		}
	}
	var want []string
	for i, id := range ids {
		if i%5 == 0 {
			want = append(want, id)
		}
	}
	assert.Equal(t, want, stayed, "they stay in their spooled order")

	target.mu.Lock()
	clear(target.fail)
	target.mu.Unlock()
	target.Reset()
	res, err = s.Replay(context.Background(), target, deadletter.ReplayOptions{})
	require.NoError(t, err)
	assert.Equal(t, 10, res.Published)
	var again []string
	for _, m := range target.Messages() {
		again = append(again, m.ID)
	}
	assert.Equal(t, want, again, "replayed in their order")
	left, _ = scanAll(t, s)
	assert.Empty(t, left)
	assert.Zero(t, s.Len())
	assert.Zero(t, s.Entries())
}

// TestReplayStoppedKeepsReasons: a replay whose ctx ends leaves what it did
// not confirm as it was: reason and attempts unchanged.
func TestReplayStoppedKeepsReasons(t *testing.T) {
	s, err := deadletter.OpenSpool(t.TempDir())
	require.NoError(t, err)
	defer s.Close()
	for range 3 {
		require.NoError(t, s.Put(context.Background(), entry("order.created")))
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := &brokertest.Recorder{Fail: func(broker.Message) error { cancel(); return context.Canceled }}
	_, err = s.Replay(ctx, stop, deadletter.ReplayOptions{Workers: 1})
	require.Error(t, err)
	left, _ := scanAll(t, s)
	require.Len(t, left, 3)
	for _, e := range left {
		assert.Equal(t, 5, e.Attempts)
		assert.Contains(t, e.Reason, "connection refused")
	}
	require.NoError(t, s.Close())
	_, err = s.Replay(context.Background(), stop, deadletter.ReplayOptions{})
	assert.ErrorIs(t, err, broker.ErrClosed, "no replay after Close")
}

// TestCrashSafety: a child process spools entries and prints each id once
// Put returned; it is killed with SIGKILL mid-stream. Every printed id must
// be readable afterwards, with at most one torn record.
func TestCrashSafety(t *testing.T) {
	if dir := os.Getenv("DEADLETTER_CRASH_CHILD"); dir != "" {
		s, err := deadletter.OpenSpool(dir)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		w := bufio.NewWriter(os.Stdout)
		for {
			e := entry("order.created")
			e.Message.Body = make([]byte, 4096) // big records: kills land mid-write
			if err := s.Put(context.Background(), e); err != nil {
				fmt.Println("ERR", err)
				os.Exit(1)
			}
			fmt.Fprintln(w, e.Message.ID)
			w.Flush()
		}
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSafety$")
		cmd.Env = append(os.Environ(), "DEADLETTER_CRASH_CHILD="+dir)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		sc := bufio.NewScanner(out)
		var written []string
		for sc.Scan() && len(written) < 200*(round+1) {
			line := sc.Text()
			require.False(t, strings.HasPrefix(line, "ERR"), line)
			written = append(written, line)
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		for sc.Scan() { // ids printed before the kill landed
			written = append(written, sc.Text())
		}
		_ = cmd.Wait()

		s, err := deadletter.OpenSpool(dir)
		require.NoError(t, err)
		have := map[string]bool{}
		rep, err := s.Scan(func(e broker.DeadLetter) error { have[e.Message.ID] = true; return nil })
		require.NoError(t, err)
		require.NoError(t, s.Close())
		missing := 0
		for _, id := range written {
			if !have[id] {
				missing++
			}
		}
		t.Logf("round %d: acknowledged=%d in spool=%d torn=%d", round, len(written), rep.Entries, len(rep.Torn))
		assert.Zero(t, missing, "every acknowledged write survives SIGKILL")
		assert.LessOrEqual(t, len(rep.Torn), round+1, "at most one torn record per crash")
	}
}
