package rabbittest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/domainevents/domainevents/internal/testenv"
)

// Nodes is the number of nodes of the cluster [Cluster] starts.
const Nodes = 3

// LocalCluster is the three-node cluster a test got from [Cluster]. Nodes
// are numbered 0, 1, 2 here (the script numbers them 1, 2, 3): node i
// listens on Addrs()[i]. Its methods are safe for concurrent use; the ones
// that change a node wait until the change is complete and return an error
// instead of failing the test, so they may run on any goroutine.
type LocalCluster struct {
	t testing.TB
	s *clusterState
}

// clusterState is the cluster as this test binary holds it.
type clusterState struct {
	script string
	base   string
	names  []string // node names, index 0..2
	addrs  []string // host:port, index 0..2

	lock *os.File // the exclusive lock on the cluster, held until Release

	mu        sync.Mutex
	disturbed [Nodes]bool // killed or stopped by a test and not brought back
}

var shared struct {
	mu       sync.Mutex
	state    *clusterState
	err      error // the first attempt's failure, repeated to later callers
	skip     string
	released bool
}

// Cluster returns the local three-node cluster, starting it through
// scripts/rabbitmq-cluster.sh on the first call in this test binary (about
// 30-40 s on two cores) and reusing it afterwards. It waits while another
// test binary holds the cluster. When the test ends, the nodes it killed or
// stopped are started again, so the next test gets all three nodes.
//
// It skips the test unless the long test tier is on
// (DOMAINEVENTS_LONG_TESTS=1, see internal/testenv), and when
// rabbitmq-server is not installed (failing instead when CI is set). Call [Main] from TestMain so that the
// cluster is stopped when the binary's tests are done.
//
// Environment: DE_RABBIT_CLUSTER_SCRIPT overrides the script's path; the
// script's own variables (DE_RABBIT_CLUSTER_DIR, DE_RABBIT_CLUSTER_PORT, ...)
// pass through.
func Cluster(t testing.TB) *LocalCluster {
	t.Helper()
	testenv.Long(t, "starts a three-node RabbitMQ cluster")
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.released {
		t.Fatal("rabbittest: Cluster called after Release")
	}
	if shared.state == nil && shared.err == nil && shared.skip == "" {
		shared.state, shared.skip, shared.err = acquire(t)
	}
	switch {
	case shared.skip != "":
		skipOrFail(t, shared.skip)
	case shared.err != nil:
		t.Fatal(shared.err)
	}
	c := &LocalCluster{t: t, s: shared.state}
	t.Cleanup(c.heal)
	return c
}

// Main runs the tests of m and then releases the cluster (see [Release]);
// it returns the exit code for os.Exit:
//
//	func TestMain(m *testing.M) { os.Exit(rabbittest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if err := Release(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}

// Release ends this test binary's use of the cluster: it stops the cluster
// if a test binary started it and no other binary waits for it, then frees
// it for the next binary. It is a no-op when this binary never asked for
// the cluster, and idempotent. [Main] calls it; call it yourself at the end
// of the tests when TestMain does something else. Without it the cluster
// keeps running after the binary exits (the next binary that uses it
// reuses it and stops it).
func Release() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.released {
		return nil
	}
	shared.released = true
	s := shared.state
	if s == nil {
		return nil
	}
	defer s.lock.Close() // frees the flock
	if os.Getenv("DE_RABBIT_CLUSTER_KEEP") != "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(s.base, startedMarker)); err != nil {
		return nil // started by hand: leave it running
	}
	if waiters(s.base) > 0 {
		return nil // the next binary reuses it and stops it at its end
	}
	if out, err := runScript(context.Background(), s.script, "stop"); err != nil {
		return fmt.Errorf("rabbittest: stopping the cluster: %v\n%s", err, out)
	}
	_ = os.Remove(filepath.Join(s.base, startedMarker))
	return nil
}

// startedMarker, in the cluster's base directory, says a test binary
// started the cluster, so the last test binary stops it.
const startedMarker = "started-by-tests"

// acquire locks the cluster for this binary and makes sure it runs.
func acquire(t testing.TB) (s *clusterState, skip string, err error) {
	script, err := scriptPath()
	if err != nil {
		return nil, "", err
	}
	if _, err := exec.LookPath("bash"); err != nil {
		return nil, "rabbittest: the cluster script needs bash, which is not installed", nil
	}
	ctx := context.Background()
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, dl.Add(-5*time.Second))
			defer cancel()
		}
	}
	nodes, err := runScript(ctx, script, "nodes")
	if err != nil {
		if strings.Contains(nodes, "rabbitmq-server not found") {
			return nil, "rabbittest: the cluster tests need rabbitmq-server (Debian: apt-get install rabbitmq-server; " +
				"or set DE_RABBIT_SBIN to the directory holding rabbitmq-server and rabbitmqctl): " + strings.TrimSpace(nodes), nil
		}
		return nil, "", fmt.Errorf("rabbittest: %s nodes: %v\n%s", script, err, nodes)
	}
	s = &clusterState{script: script, base: baseDir()}
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, "", fmt.Errorf("rabbittest: unexpected line %q from %s nodes", line, script)
		}
		s.names = append(s.names, f[1])
		s.addrs = append(s.addrs, f[2])
	}
	if len(s.addrs) != Nodes {
		return nil, "", fmt.Errorf("rabbittest: %s nodes listed %d nodes, want %d", script, len(s.addrs), Nodes)
	}
	if s.lock, err = lockCluster(ctx, t, s.base); err != nil {
		return nil, "", err
	}
	status, statusErr := runScript(ctx, script, "status")
	var exit *exec.ExitError
	noneRunning := errors.As(statusErr, &exit) && exit.ExitCode() == 3
	if statusErr != nil {
		start := time.Now()
		out, err := runScript(ctx, script, "start")
		if err != nil {
			_ = s.lock.Close()
			return nil, "", fmt.Errorf("rabbittest: starting the cluster: %v\nstatus before:\n%s\nstart:\n%s", err, status, out)
		}
		t.Logf("rabbittest: cluster started in %v: %s", time.Since(start).Round(time.Second), strings.Join(s.addrs, " "))
		if noneRunning {
			_ = os.WriteFile(filepath.Join(s.base, startedMarker), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
		}
	}
	return s, "", nil
}

// scriptPath finds scripts/rabbitmq-cluster.sh from this source file (the
// tests run inside the module) unless DE_RABBIT_CLUSTER_SCRIPT names it.
func scriptPath() (string, error) {
	if p := os.Getenv("DE_RABBIT_CLUSTER_SCRIPT"); p != "" {
		return p, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("rabbittest: cannot find the module's scripts directory; set DE_RABBIT_CLUSTER_SCRIPT")
	}
	p := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "rabbitmq-cluster.sh")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("rabbittest: cluster script: %v; set DE_RABBIT_CLUSTER_SCRIPT", err)
	}
	return p, nil
}

// baseDir is the script's base directory (same default as the script).
func baseDir() string {
	if d := os.Getenv("DE_RABBIT_CLUSTER_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "domainevents-rabbit-cluster")
}

// lockCluster takes the exclusive lock on the cluster for this process,
// waiting (and saying so) while another test binary holds it. While it
// waits, a file in waiters/ tells the holder not to stop the cluster.
func lockCluster(ctx context.Context, t testing.TB, base string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Join(base, "waiters"), 0o755); err != nil {
		return nil, fmt.Errorf("rabbittest: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(base, ".tests.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("rabbittest: %v", err)
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		return f, nil
	}
	w := filepath.Join(base, "waiters", strconv.Itoa(os.Getpid()))
	_ = os.WriteFile(w, nil, 0o644)
	defer os.Remove(w)
	t.Logf("rabbittest: waiting for another test binary to finish with the cluster (%s)", f.Name())
	for {
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return f, nil
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("rabbittest: another test binary held the cluster until this test's deadline (%s)", f.Name())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waiters counts the live processes waiting for the cluster lock.
func waiters(base string) int {
	entries, _ := os.ReadDir(filepath.Join(base, "waiters"))
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) {
			n++
		} else {
			_ = os.Remove(filepath.Join(base, "waiters", e.Name()))
		}
	}
	return n
}

// runScript runs the cluster script and returns its combined output.
func runScript(ctx context.Context, script string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

func (c *LocalCluster) script(args ...string) error {
	out, err := runScript(context.Background(), c.s.script, args...)
	if err != nil {
		return fmt.Errorf("rabbittest: %s %s: %v\n%s", filepath.Base(c.s.script), strings.Join(args, " "), err, out)
	}
	return nil
}

func (c *LocalCluster) check(i int) error {
	if i < 0 || i >= Nodes {
		return fmt.Errorf("rabbittest: node index %d out of range [0,%d)", i, Nodes)
	}
	return nil
}

// heal brings back the nodes the tests killed or stopped.
func (c *LocalCluster) heal() {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	var any bool
	for _, d := range c.s.disturbed {
		any = any || d
	}
	if !any {
		return
	}
	if err := c.script("start"); err != nil {
		c.t.Errorf("rabbittest: bringing the cluster back after the test: %v", err)
		return
	}
	c.s.disturbed = [Nodes]bool{}
}

func (c *LocalCluster) mark(i int, disturbed bool) {
	c.s.mu.Lock()
	c.s.disturbed[i] = disturbed
	c.s.mu.Unlock()
}
