package rabbittest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/internal/rabbittest"
	"github.com/domainevents/domainevents/internal/testenv"
)

// quorumQueue declares a fresh quorum queue through node i and deletes it
// when the test ends.
func quorumQueue(t *testing.T, c *rabbittest.LocalCluster, i int) string {
	t.Helper()
	name := "det.cluster." + uuid.NewString()[:8]
	conn, err := c.Dial(i)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	_, err = ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.NoError(t, err)
	t.Cleanup(func() {
		for j := range rabbittest.Nodes {
			if conn, err := c.Dial(j); err == nil {
				if ch, err := conn.Channel(); err == nil {
					_, _ = ch.QueueDelete(name, false, false, false)
				}
				_ = conn.Close()
				return
			}
		}
	})
	return name
}

// publishConfirmed publishes n messages with ids prefix-0..n-1 through node
// i and waits for every confirm.
func publishConfirmed(t *testing.T, c *rabbittest.LocalCluster, i int, queue, prefix string, n int) []string {
	t.Helper()
	conn, err := c.Dial(i)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := make([]string, n)
	confirms := make([]*amqp.DeferredConfirmation, n)
	for k := range n {
		ids[k] = fmt.Sprintf("%s-%d", prefix, k)
		confirms[k], err = ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false,
			amqp.Publishing{MessageId: ids[k], DeliveryMode: amqp.Persistent, Body: []byte(ids[k])})
		require.NoError(t, err)
	}
	for k, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		require.NoError(t, err)
		require.True(t, ok, "message %s nacked", ids[k])
	}
	return ids
}

// consumeIDs reads queue through node i until every id of want arrived.
func consumeIDs(t *testing.T, c *rabbittest.LocalCluster, i int, queue string, want []string) map[string]int {
	t.Helper()
	conn, err := c.Dial(i)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Qos(500, 0, false))
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	require.NoError(t, err)
	missing := map[string]bool{}
	for _, id := range want {
		missing[id] = true
	}
	got := map[string]int{}
	timeout := time.After(30 * time.Second)
	for len(missing) > 0 {
		select {
		case d, ok := <-deliveries:
			require.True(t, ok, "consumer closed with %d missing", len(missing))
			got[d.MessageId]++
			delete(missing, d.MessageId)
			require.NoError(t, d.Ack(false))
		case <-timeout:
			t.Fatalf("%d of %d messages missing", len(missing), len(want))
		}
	}
	return got
}

// TestClusterSmoke: the three nodes form one cluster; a message published
// to a quorum queue through one node is read through another.
func TestClusterSmoke(t *testing.T) {
	testenv.Long(t, "starts a three-node RabbitMQ cluster")
	c := rabbittest.Cluster(t)
	require.Len(t, c.Addrs(), 3)
	for i := range rabbittest.Nodes {
		assert.Equal(t, fmt.Sprintf("de-c%d@localhost", i+1), c.Name(i))
		got, ok := c.NodeOf(c.Addr(i))
		assert.True(t, ok)
		assert.Equal(t, i, got)
		got, ok = c.NodeOf(c.URL(i))
		assert.True(t, ok)
		assert.Equal(t, i, got)
		assert.NotEqual(t, rabbittest.Addr(), c.Addr(i), "never the machine's own node")
	}
	_, ok := c.NodeOf(rabbittest.Addr())
	assert.False(t, ok)

	q := quorumQueue(t, c, 0)
	ids := publishConfirmed(t, c, 1, q, "smoke", 100)
	got := consumeIDs(t, c, 2, q, ids)
	assert.Len(t, got, 100)

	leader, err := c.QueueLeader(q)
	require.NoError(t, err)
	assert.Equal(t, 0, leader, "a quorum queue's leader is the node it was declared on")

	conn, err := amqp.DialConfig(c.URL(2), amqp.Config{Properties: amqp.Table{"connection_name": "smoke-" + q}})
	require.NoError(t, err)
	defer conn.Close()
	node, ok := c.NodeOfConn(conn)
	require.True(t, ok)
	assert.Equal(t, 2, node)
	conns, err := c.Connections()
	require.NoError(t, err)
	var found bool
	for _, sc := range conns {
		if sc.Name == "smoke-"+q {
			found = true
			assert.Equal(t, 2, sc.Node)
			assert.Equal(t, conn.LocalAddr().String(), sc.ClientAddr)
		}
	}
	assert.True(t, found, "the connection is listed by name: %+v", conns)
}

// TestClusterKillLeader: with the leader of a quorum queue SIGKILLed, the
// queue keeps its confirmed messages and accepts new ones through the
// other nodes; the killed node rejoins on Restart.
func TestClusterKillLeader(t *testing.T) {
	testenv.Long(t, "starts a three-node RabbitMQ cluster")
	c := rabbittest.Cluster(t)
	q := quorumQueue(t, c, 0)
	before := publishConfirmed(t, c, 1, q, "before", 200)

	require.NoError(t, c.Kill(0))
	_, err := c.Dial(0)
	require.Error(t, err, "node 0 is down")
	brokertestWait(t, 30*time.Second, "a new leader", func() bool {
		l, err := c.QueueLeader(q)
		return err == nil && l != 0
	})
	after := publishConfirmed(t, c, 2, q, "after", 200)
	got := consumeIDs(t, c, 1, q, append(before, after...))
	assert.Len(t, got, 400)

	require.NoError(t, c.Restart(0))
	conn, err := c.Dial(0)
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	out, err := c.Ctl(0, "eval", "length(rabbit_nodes:all_running()).")
	require.NoError(t, err)
	assert.Equal(t, "3", trim(out))
}

// TestClusterStopAppHealedAfterTest: a node whose app a test stopped is
// running again for the next test.
func TestClusterStopAppHealedAfterTest(t *testing.T) {
	testenv.Long(t, "starts a three-node RabbitMQ cluster")
	t.Run("stop", func(t *testing.T) {
		c := rabbittest.Cluster(t)
		require.NoError(t, c.StopApp(2))
		_, err := c.Dial(2)
		require.Error(t, err)
	})
	c := rabbittest.Cluster(t)
	conn, err := c.Dial(2)
	require.NoError(t, err, "the cleanup of the previous test started the app again")
	require.NoError(t, conn.Close())
}
