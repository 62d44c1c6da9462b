package rabbittest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

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
