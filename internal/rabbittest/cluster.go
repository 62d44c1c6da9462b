package rabbittest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
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

	amqp "github.com/rabbitmq/amqp091-go"
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
// It skips the test with -short, and when rabbitmq-server is not installed
// (failing instead when CI is set). Call [Main] from TestMain so that the
// cluster is stopped when the binary's tests are done.
//
// Environment: DE_RABBIT_CLUSTER_SCRIPT overrides the script's path; the
// script's own variables (DE_RABBIT_CLUSTER_DIR, DE_RABBIT_CLUSTER_PORT, ...)
// pass through.
func Cluster(t testing.TB) *LocalCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("rabbittest: the cluster tests are long; run them without -short")
	}
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

// Addrs are the nodes' AMQP addresses (host:port), index i for node i.
func (c *LocalCluster) Addrs() []string { return append([]string(nil), c.s.addrs...) }

// Addr is node i's AMQP address (host:port).
func (c *LocalCluster) Addr(i int) string { return c.s.addrs[i] }

// URL is node i's AMQP URL with the test credentials (guest/guest).
func (c *LocalCluster) URL(i int) string { return URL(c.s.addrs[i]) }

// Name is node i's Erlang node name, such as de-c1@localhost.
func (c *LocalCluster) Name(i int) string { return c.s.names[i] }

// Dial opens an admin connection to node i; the caller closes it.
func (c *LocalCluster) Dial(i int) (*amqp.Connection, error) { return Dial(c.s.addrs[i]) }

// Kill SIGKILLs node i's Erlang VM and returns once the process is gone. The
// node stays down until [LocalCluster.Restart] or the end of the test.
func (c *LocalCluster) Kill(i int) error {
	if err := c.check(i); err != nil {
		return err
	}
	c.mark(i, true)
	return c.script("kill", strconv.Itoa(i+1))
}

// Restart stops node i if it runs, starts it again and returns once it
// answers AMQP and has rejoined the cluster (about 15-25 s here).
func (c *LocalCluster) Restart(i int) error {
	if err := c.check(i); err != nil {
		return err
	}
	c.mark(i, true)
	if err := c.script("restart", strconv.Itoa(i+1)); err != nil {
		return err
	}
	c.mark(i, false)
	return nil
}

// StopApp stops the RabbitMQ application on node i (rabbitmqctl stop_app):
// its clients are disconnected and it leaves the running cluster, while its
// Erlang VM stays up.
func (c *LocalCluster) StopApp(i int) error {
	if err := c.check(i); err != nil {
		return err
	}
	c.mark(i, true)
	return c.script("stop-app", strconv.Itoa(i+1))
}

// StartApp starts the RabbitMQ application on node i again and returns once
// it answers AMQP and the cluster has all three nodes running.
func (c *LocalCluster) StartApp(i int) error {
	if err := c.check(i); err != nil {
		return err
	}
	if err := c.script("start-app", strconv.Itoa(i+1)); err != nil {
		return err
	}
	c.mark(i, false)
	return nil
}

// NodeOf returns the index of the node at addr, which is host:port or an
// AMQP URL; ok is false when addr is not one of the cluster's nodes.
func (c *LocalCluster) NodeOf(addr string) (i int, ok bool) {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return 0, false
		}
		addr = u.Host
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, false
	}
	for i, a := range c.s.addrs {
		if _, p, _ := net.SplitHostPort(a); p == port {
			return i, true
		}
	}
	return 0, false
}

// NodeOfConn returns the index of the node conn is connected to.
func (c *LocalCluster) NodeOfConn(conn *amqp.Connection) (i int, ok bool) {
	if conn == nil || conn.RemoteAddr() == nil {
		return 0, false
	}
	return c.NodeOf(conn.RemoteAddr().String())
}

// Ctl runs rabbitmqctl -n <node i> with args and returns its output.
func (c *LocalCluster) Ctl(i int, args ...string) (string, error) {
	if err := c.check(i); err != nil {
		return "", err
	}
	out, err := runScript(context.Background(), c.s.script, append([]string{"ctl", strconv.Itoa(i + 1)}, args...)...)
	if err != nil {
		return out, fmt.Errorf("rabbittest: rabbitmqctl -n %s %s: %v\n%s", c.s.names[i], strings.Join(args, " "), err, out)
	}
	return out, nil
}

// ctlAny runs rabbitmqctl on the first node that answers.
func (c *LocalCluster) ctlAny(args ...string) (string, error) {
	var errs []error
	for i := range Nodes {
		if _, err := net.DialTimeout("tcp", c.s.addrs[i], time.Second); err != nil {
			continue // down or app stopped
		}
		out, err := c.Ctl(i, args...)
		if err == nil {
			return out, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return "", errors.New("rabbittest: no node of the cluster answers")
	}
	return "", errors.Join(errs...)
}

// QueueLeader returns the index of the node that leads the quorum queue
// name (queues on the default virtual host).
func (c *LocalCluster) QueueLeader(name string) (int, error) {
	out, err := c.ctlAny("list_queues", "name", "type", "leader", "--formatter", "json")
	if err != nil {
		return 0, err
	}
	var qs []struct{ Name, Type, Leader string }
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		return 0, fmt.Errorf("rabbittest: list_queues: %v in %q", err, out)
	}
	for _, q := range qs {
		if q.Name != name {
			continue
		}
		for i, n := range c.s.names {
			if n == q.Leader {
				return i, nil
			}
		}
		return 0, fmt.Errorf("rabbittest: queue %s (%s) has no leader among the cluster's nodes (leader %q)", name, q.Type, q.Leader)
	}
	return 0, fmt.Errorf("rabbittest: no queue %s", name)
}

// Conn is a client connection as the cluster sees it.
type Conn struct {
	Node       int    // index of the node it is connected to
	ClientAddr string // the client's host:port
	Name       string // the connection_name client property, if the client set one
}

// Connections lists the client connections of the whole cluster, as the
// servers see them: a test finds which node a library client connected to
// by its connection name or local port.
func (c *LocalCluster) Connections() ([]Conn, error) {
	out, err := c.ctlAny("list_connections", "name", "client_properties", "--formatter", "json")
	if err != nil {
		return nil, err
	}
	var raw []struct {
		Name             string              `json:"name"`
		ClientProperties [][]json.RawMessage `json:"client_properties"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("rabbittest: list_connections: %v in %q", err, out)
	}
	conns := make([]Conn, 0, len(raw))
	for _, r := range raw {
		// name is "client host:port -> server host:port"
		client, server, ok := strings.Cut(r.Name, " -> ")
		if !ok {
			continue
		}
		node, ok := c.NodeOf(server)
		if !ok {
			continue
		}
		conn := Conn{Node: node, ClientAddr: client}
		for _, p := range r.ClientProperties {
			var key string
			if len(p) == 3 && json.Unmarshal(p[0], &key) == nil && key == "connection_name" {
				_ = json.Unmarshal(p[2], &conn.Name)
			}
		}
		conns = append(conns, conn)
	}
	return conns, nil
}
