package outbox_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/internal/testenv"
	"github.com/domainevents/domainevents/outbox"
)

// runMigrateChild is a process calling Migrate once on fresh tables, at
// the same moment as its siblings: it connects, says "ready" on stdout,
// waits for a line on stdin, migrates, and reports "ok" or the error.
func runMigrateChild(c childConf) error {
	s, err := c.store()
	if err != nil {
		return err
	}
	defer s.DB().Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.DB().PingContext(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start: %w", err)
	}
	if err := s.Migrate(ctx); err != nil {
		fmt.Println("failed:", err)
		return err
	}
	fmt.Println("ok")
	return nil
}

// Every process of a deployment calls Migrate at start, often at the same
// moment. 8 processes at once on fresh tables, rounds times: none fails,
// and the tables work afterwards.
func TestMigrateConcurrentProcesses(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) { runMigrateRounds(t, db, 2) })
}

// The full run: 20 rounds of 8 processes on each database.
func TestMigrateConcurrentProcessesLong(t *testing.T) {
	testenv.Long(t, "20 rounds of 8 processes calling Migrate at once, on three databases")
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) { runMigrateRounds(t, db, 20) })
}

func runMigrateRounds(t *testing.T, db *dbtest.DB, rounds int) {
	const procs = 8
	failures := 0
	for round := range rounds {
		prefix := fmt.Sprintf("%sm%02d_", db.Prefix, round)
		conf := childConf{Role: "migrate", DBKind: db.Kind, DSN: db.DSN, Prefix: prefix}
		type proc struct {
			cmd   *exec.Cmd
			in    io.WriteCloser
			out   *bufio.Reader
			errs  strings.Builder
			lines []string
		}
		ps := make([]*proc, procs)
		for i := range ps {
			p := &proc{cmd: exec.Command(os.Args[0], "-test.run=^$")}
			p.cmd.Env = conf.env()
			p.cmd.Stderr = &p.errs
			var err error
			p.in, err = p.cmd.StdinPipe()
			require.NoError(t, err)
			stdout, err := p.cmd.StdoutPipe()
			require.NoError(t, err)
			p.out = bufio.NewReader(stdout)
			require.NoError(t, p.cmd.Start())
			t.Cleanup(func() { _ = p.cmd.Process.Kill() })
			ps[i] = p
		}
		for i, p := range ps { // every child connected: a real barrier, no sleep
			line, err := p.out.ReadString('\n')
			require.NoError(t, err, "child %d: %s", i, p.errs.String())
			require.Equal(t, "ready\n", line)
		}
		for _, p := range ps {
			_, err := io.WriteString(p.in, "go\n")
			require.NoError(t, err)
		}
		for i, p := range ps {
			rest, _ := io.ReadAll(p.out)
			err := p.cmd.Wait()
			if err != nil {
				failures++
				t.Errorf("round %d, process %d: %v: %s%s", round, i, err, rest, p.errs.String())
			}
		}
		// The tables are all there and work.
		s, err := outbox.New(db.DB, dialectOf(db), outbox.WithTables(outbox.Tables{
			Outbox: prefix + "outbox", Keys: prefix + "keys", Inbox: prefix + "inbox"}))
		require.NoError(t, err)
		write(t, s, newMsg("k"))
		n, _, err := s.Backlog(context.Background())
		require.NoError(t, err)
		assert.Equal(t, int64(1), n)
	}
	t.Logf("%s: %d rounds of %d processes calling Migrate at once on fresh tables: %d failures", db.Kind, rounds, procs, failures)
	assert.Zero(t, failures)
}
