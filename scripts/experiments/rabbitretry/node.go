package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// nodes drives the experiment's RabbitMQ nodes through the cluster script.
type nodes struct {
	script string
	env    []string
	addrs  []string
}

// singleNode is one throwaway node de-x1@localhost on 127.0.0.1:5691 with
// its own base directory: never the machine's node, never the test cluster.
func singleNode(script string) nodes {
	return nodes{script: script, env: []string{
		"DE_RABBIT_CLUSTER_DIR=" + os.TempDir() + "/domainevents-rabbit-experiment",
		"DE_RABBIT_CLUSTER_PORT=5690",
		"DE_RABBIT_CLUSTER_NAME=de-x",
		"DE_RABBIT_CLUSTER_NODES=1",
	}, addrs: []string{"127.0.0.1:5691"}}
}

// testCluster is the 3-node test cluster (the script's defaults).
func testCluster(script string) nodes {
	return nodes{script: script, addrs: []string{"127.0.0.1:5681", "127.0.0.1:5682", "127.0.0.1:5683"}}
}

func (n nodes) run(args ...string) error {
	out, err := n.output(args...)
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", n.script, strings.Join(args, " "), err, out)
	}
	return nil
}

func (n nodes) output(args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{n.script}, args...)...)
	cmd.Env = append(os.Environ(), n.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (n nodes) url(i int) string { return "amqp://guest:guest@" + n.addrs[i] + "/" }

func (n nodes) dial(i int) (*amqp.Connection, error) {
	return amqp.DialConfig(n.url(i), amqp.Config{Dial: amqp.DefaultDial(2 * time.Second), Heartbeat: 2 * time.Second})
}

// dialRetry dials node i until it answers or d passes.
func (n nodes) dialRetry(i int, d time.Duration) (*amqp.Connection, error) {
	deadline := time.Now().Add(d)
	for {
		c, err := n.dial(i)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// queueDepth is the number of ready messages in q (passive declare).
func queueDepth(conn *amqp.Connection, q string) (int, error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	return st.Messages, nil
}

func deleteQueues(conn *amqp.Connection, qs ...string) {
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	for _, q := range qs {
		_, _ = ch.QueueDelete(q, false, false, false)
	}
}

// drain consumes q until it has been empty for quiet, counting deliveries
// by message id.
func drain(conn *amqp.Connection, q string, quiet time.Duration) (map[string]int, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	if err := ch.Qos(2000, 0, false); err != nil {
		return nil, err
	}
	ds, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	got := map[string]int{}
	for {
		select {
		case d, ok := <-ds:
			if !ok {
				return got, fmt.Errorf("drain %s: channel closed", q)
			}
			got[d.MessageId]++
			_ = d.Ack(false)
		case <-time.After(quiet):
			return got, nil
		}
	}
}
