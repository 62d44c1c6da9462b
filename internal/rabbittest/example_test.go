package rabbittest_test

import (
	"testing"

	"github.com/domainevents/domainevents/internal/rabbittest"
)

// The test's *testing.T; the examples compile but do not run.
var t *testing.T

// A test on the three-node cluster: connect to every node, kill the one a
// client uses, bring it back. The package's TestMain calls rabbittest.Main
// so that the cluster stops when the tests are done.
func ExampleCluster() {
	c := rabbittest.Cluster(t)
	addrs := c.Addrs() // 127.0.0.1:5681, :5682, :5683: give them all to the client
	_ = addrs
	if err := c.Kill(0); err != nil { // SIGKILL of node 0's Erlang VM
		t.Fatal(err)
	}
	// ... assert that the client fails over and loses nothing ...
	if err := c.Restart(0); err != nil { // back and rejoined
		t.Fatal(err)
	}
}

// Cut the connections of a client to the single test server.
func ExampleNewProxy() {
	rabbittest.RequireRabbit(t)
	p := rabbittest.NewProxy(t, rabbittest.Addr())
	// connect the client under test to p.URL(), then:
	p.Cut()       // a network failure
	p.Refuse()    // the server is gone
	p.Accept()    // and back
	p.Stall(true) // a server that stopped reading (memory alarm)
}
