package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
)

// runProbe records what a quorum queue's x-delivery-count says after each
// way a delivery can come back (nack, reject, channel close, connection
// close, node SIGKILL), and where x-delivery-limit sends a message.
func runProbe(c config) (string, error) {
	nd, admin, err := startNode(c)
	if err != nil {
		return "", err
	}
	defer func() { _ = admin.Close() }()
	q := "exp.probe." + uuid.NewString()[:8]
	ch, err := admin.Channel()
	if err != nil {
		return "", err
	}
	if _, err := ch.QueueDeclare(q+".dlq", true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return "", err
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{
		"x-queue-type":              "quorum",
		"x-delivery-limit":          int64(5),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": q + ".dlq",
		"x-dead-letter-strategy":    "at-least-once",
		"x-overflow":                "reject-publish",
	}); err != nil {
		return "", err
	}
	declared := time.Now()
	if err := ch.Confirm(false); err != nil {
		return "", err
	}
	dc, err := ch.PublishWithDeferredConfirm("", q, true, false, amqp.Publishing{MessageId: "probe", DeliveryMode: amqp.Persistent})
	if err != nil {
		return "", err
	}
	if !dc.Wait() {
		return "", fmt.Errorf("probe message nacked")
	}
	_ = ch.Close()

	var out []string
	// get takes the message with a fresh connection and channel.
	// A quorum queue just restarted answers basic.get with an error
	// until it has elected its leader: retry on a new channel.
	get := func(conn *amqp.Connection) (*amqp.Channel, amqp.Delivery, error) {
		deadline := time.Now().Add(30 * time.Second)
		var lastErr error
		for time.Now().Before(deadline) {
			ch, err := conn.Channel()
			if err != nil {
				return nil, amqp.Delivery{}, err
			}
			d, ok, err := ch.Get(q, false)
			if err == nil && ok {
				return ch, d, nil
			}
			lastErr = err
			logf(c, "probe: get: ok=%v err=%v", ok, err)
			_ = ch.Close()
			time.Sleep(100 * time.Millisecond)
		}
		return nil, amqp.Delivery{}, fmt.Errorf("the probe message did not come back (%v)", lastErr)
	}
	note := func(step string, d amqp.Delivery) {
		out = append(out, fmt.Sprintf("%s: x-delivery-count=%v redelivered=%v", step, d.Headers["x-delivery-count"], d.Redelivered))
		logf(c, "probe: %s", out[len(out)-1])
	}
	conn, err := nd.dial(0)
	if err != nil {
		return "", err
	}
	ch, d, err := get(conn)
	if err != nil {
		return "", err
	}
	note("first delivery", d)
	_ = d.Nack(false, true)
	ch.Close()
	ch, d, err = get(conn)
	if err != nil {
		return "", err
	}
	note("after basic.nack requeue", d)
	_ = d.Reject(true)
	ch.Close()
	ch, d, err = get(conn)
	if err != nil {
		return "", err
	}
	note("after basic.reject requeue", d)
	_ = ch.Close() // not acked: returned by the channel close
	ch, d, err = get(conn)
	if err != nil {
		return "", err
	}
	note("after channel close", d)
	_ = conn.Close() // returned by the connection close
	conn, err = nd.dial(0)
	if err != nil {
		return "", err
	}
	ch, d, err = get(conn)
	if err != nil {
		return "", err
	}
	note("after connection close", d)
	// A quorum queue declared less than about a second before a SIGKILL
	// does not survive it on a single node (see -mode fresh): wait.
	time.Sleep(time.Until(declared.Add(5 * time.Second)))
	if _, _, err := killAndRestart(nd, 0); err != nil {
		return "", err
	}
	conn, err = nd.dialRetry(0, 60*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ch, d, err = get(conn)
	if err != nil {
		return "", err
	}
	note("after SIGKILL of the node", d)
	// Past x-delivery-limit=5 the message is dead-lettered to the DLQ.
	for range 10 {
		_ = d.Nack(false, true)
		ch.Close()
		ch, err = conn.Channel()
		if err != nil {
			return "", err
		}
		var ok bool
		if d, ok, err = ch.Get(q, false); err != nil || !ok {
			break
		}
		note("after another nack", d)
	}
	time.Sleep(500 * time.Millisecond)
	n, _ := queueDepth(conn, q+".dlq")
	m, _ := queueDepth(conn, q)
	out = append(out, fmt.Sprintf("x-delivery-limit=5: main queue %d, dlq %d", m, n))
	deleteQueues(conn, q, q+".dlq")
	return "probe (quorum queue, RabbitMQ 3.10):\n  " + strings.Join(out, "\n  "), nil
}

// runFresh declares a quorum queue (plain, or with the at-least-once
// dead-letter arguments and a delivery limit when dlx), publishes n
// confirmed messages, waits c.killAfter, SIGKILLs the single node, restarts
// it and counts what the queue still holds.
func runFresh(c config, run int, dlx bool) (string, error) {
	nd, admin, err := startNode(c)
	if err != nil {
		return "", err
	}
	q := "exp.fresh." + uuid.NewString()[:8]
	args := amqp.Table{"x-queue-type": "quorum"}
	if dlx {
		args = amqp.Table{
			"x-queue-type":              "quorum",
			"x-delivery-limit":          int64(5),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": q + ".dlq",
			"x-dead-letter-strategy":    "at-least-once",
			"x-overflow":                "reject-publish",
		}
	}
	ch, err := admin.Channel()
	if err != nil {
		return "", err
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
		return "", err
	}
	_ = ch.Close()
	declared := time.Now()
	confirmed, err := publishPaced(admin, q, newIDs(q, c.n), 0)
	if err != nil {
		return "", err
	}
	_ = admin.Close()
	time.Sleep(time.Until(declared.Add(c.killAfter)))
	if _, _, err := killAndRestart(nd, 0); err != nil {
		return "", err
	}
	conn, err := nd.dialRetry(0, 60*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	// Wait for the queue to answer (it needs a leader), at most 30 s; the
	// message the probe takes counts.
	got := map[string]int{}
	var derr error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ch, err := conn.Channel()
		if err != nil {
			return "", err
		}
		var d amqp.Delivery
		var ok bool
		d, ok, derr = ch.Get(q, true)
		_ = ch.Close()
		if derr == nil {
			if ok {
				got[d.MessageId]++
			}
			break
		}
		if conn.IsClosed() {
			if conn, err = nd.dialRetry(0, 10*time.Second); err != nil {
				return "", err
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	answered := derr == nil
	if answered {
		rest, err := drain(conn, q, 2*time.Second)
		if err != nil {
			return "", err
		}
		for id, k := range rest {
			got[id] += k
		}
	}
	lost := 0
	for _, id := range confirmed {
		if got[id] == 0 {
			lost++
		}
	}
	deleteQueues(conn, q)
	return fmt.Sprintf("fresh dlx=%v run=%d kill_after_declare=%s confirmed=%d queue_answers_after_restart=%v recovered=%d lost_confirmed=%d",
		dlx, run, c.killAfter, len(confirmed), answered, len(got), lost), nil
}
