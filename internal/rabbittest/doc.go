// Package rabbittest gives tests real RabbitMQ servers and ways to break
// them. It is imported only by _test files.
//
// # The single server
//
// [RequireRabbit] returns an admin connection to the machine's test server
// (RABBITMQ_ADDR, default 127.0.0.1:5672, guest/guest). Without a server a
// test skips with a message saying how to start one; with CI=true it fails.
//
// # The cluster
//
// [Cluster] gives a test a private three-node RabbitMQ cluster on loopback
// (nodes de-c1..de-c3@localhost on 127.0.0.1:5681-5683), started through
// scripts/rabbitmq-cluster.sh the first time a test binary asks for it and
// reused by its later tests. The machine's own node on 5672 is never
// touched. One test binary at a time uses the cluster: another binary that
// asks waits until the first one ends (the tests break nodes on purpose).
// Each test gets a healthy cluster: the nodes a test killed or stopped are
// brought back when it ends. A package that uses the cluster stops it at
// the end with [Main]:
//
//	func TestMain(m *testing.M) { os.Exit(rabbittest.Main(m)) }
//
// The cluster is stopped only if a test binary started it and no other
// binary is waiting for it; a cluster started by hand
// (scripts/rabbitmq-cluster.sh start) is left running, which makes repeated
// runs fast, and DE_RABBIT_CLUSTER_KEEP=1 keeps one the tests started.
// Cluster tests belong to the long test tier: they skip unless
// DOMAINEVENTS_LONG_TESTS=1 (internal/testenv). Without rabbitmq-server
// installed they skip too (fail with CI=true).
//
// # Faults
//
// [Proxy] is a loopback TCP proxy in front of a server that can cut, refuse,
// black-hole and stall connections. For a node that dies, use
// [LocalCluster.Kill] (SIGKILL of its Erlang VM), [LocalCluster.StopApp]
// (the node stops serving but stays in the cluster) and their
// counterparts [LocalCluster.Restart] and [LocalCluster.StartApp].
package rabbittest
