package deadletter_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/deadletter"
)

// TestOneOwnerInProcess: a second OpenSpool of a directory fails while the
// first is open, naming this process; after Close it succeeds.
func TestOneOwnerInProcess(t *testing.T) {
	dir := t.TempDir()
	first, err := deadletter.OpenSpool(dir)
	require.NoError(t, err)
	_, err = deadletter.OpenSpool(dir)
	require.ErrorIs(t, err, deadletter.ErrLocked)
	var le *deadletter.LockedError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, os.Getpid(), le.PID)
	assert.Contains(t, err.Error(), dir)
	assert.Contains(t, err.Error(), "process "+strconv.Itoa(os.Getpid()))
	require.NoError(t, first.Close())
	require.NoError(t, first.Close(), "second Close")
	again, err := deadletter.OpenSpool(dir)
	require.NoError(t, err)
	require.NoError(t, again.Close())
}

// TestOneOwnerAcrossProcesses: a child process owns the spool and keeps
// spooling; this process is refused (naming the child's pid) while it
// runs, and gets the spool once the child is killed with SIGKILL: the
// lock dies with its owner, and every entry the child acknowledged is
// there.
func TestOneOwnerAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("DEADLETTER_LOCK_CHILD"); dir != "" {
		s, err := deadletter.OpenSpool(dir)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		w := bufio.NewWriter(os.Stdout)
		for {
			e := entry("order.created")
			if err := s.Put(context.Background(), e); err != nil {
				fmt.Println("ERR", err)
				os.Exit(1)
			}
			fmt.Fprintln(w, e.Message.ID)
			w.Flush()
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOneOwnerAcrossProcesses$")
	cmd.Env = append(os.Environ(), "DEADLETTER_LOCK_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	var written []string
	refusals := 0
	for sc.Scan() && len(written) < 300 {
		line := sc.Text()
		require.False(t, strings.HasPrefix(line, "ERR"), line)
		written = append(written, line)
		if len(written)%100 == 0 { // while the child writes, this process is refused
			_, err := deadletter.OpenSpool(dir)
			require.ErrorIs(t, err, deadletter.ErrLocked)
			assert.Contains(t, err.Error(), "process "+strconv.Itoa(cmd.Process.Pid))
			refusals++
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	for sc.Scan() {
		written = append(written, sc.Text())
	}
	_ = cmd.Wait()

	s, err := deadletter.OpenSpool(dir)
	require.NoError(t, err, "the lock dies with its owner")
	defer s.Close()
	have := map[string]bool{}
	_, err = s.Scan(func(e broker.DeadLetter) error { have[e.Message.ID] = true; return nil })
	require.NoError(t, err)
	lost := 0
	for _, id := range written {
		if !have[id] {
			lost++
		}
	}
	t.Logf("child acknowledged %d entries, %d refusals while it ran, %d in the spool after SIGKILL, %d lost", len(written), refusals, len(have), lost)
	assert.Equal(t, 3, refusals)
	assert.Zero(t, lost)
	assert.Equal(t, int64(len(have)), s.Entries(), "Entries counts what a scan finds")
}

func TestEntriesFollowPutsAndReplays(t *testing.T) {
	var depth []float64
	obs := broker.ObserverFunc(func(_ context.Context, o broker.Observation) {
		if o.Kind == broker.ObservedSpoolDepth {
			depth = append(depth, o.Value)
		}
	})
	s, err := deadletter.OpenSpool(t.TempDir(), deadletter.WithObserver(obs))
	require.NoError(t, err)
	defer s.Close()
	for range 3 {
		require.NoError(t, s.Put(context.Background(), entry("order.created")))
	}
	assert.Equal(t, int64(3), s.Entries())
	fail := &failing{fail: map[string]bool{}}
	first := true
	_, err = s.Scan(func(e broker.DeadLetter) error {
		if first {
			fail.fail[e.Message.ID] = true
			first = false
		}
		return nil
	})
	require.NoError(t, err)
	res, err := s.Replay(context.Background(), fail, deadletter.ReplayOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, res.Published)
	assert.Equal(t, int64(1), s.Entries(), "the one that failed again stays")
	assert.Equal(t, []float64{1, 2, 3, 1}, depth, "the observer sees the depth after each Put and the replay")
	_, err = deadletter.OpenSpool("")
	assert.True(t, err != nil && !errors.Is(err, deadletter.ErrLocked))
}
