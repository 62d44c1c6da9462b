package domainevents

import (
	"context"
	"errors"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/deadletter"
)

// Replay re-publishes what the spool holds through the adapter (not the
// retry layer, which would spool it again) and removes what the broker
// confirmed; what the broker refuses for good (unroutable, too large...)
// moves to its dead-letter queue; what still cannot be delivered stays,
// with its new reason. It runs in this process, which owns the spool: the
// replay command refuses while a service holds it. Open replays by itself
// once the broker is reachable ([WithReplayInterval]); call Replay to do it
// now. With the broker disabled there is no spool and Replay does nothing.
func (p *Publisher) Replay(ctx context.Context) (deadletter.ReplayResult, error) {
	if p.spool == nil {
		return deadletter.ReplayResult{}, nil
	}
	p.replay.Lock()
	defer p.replay.Unlock()
	return p.spool.Replay(ctx, replayTarget{adapter: p.adapter, dlq: p.dlq}, deadletter.ReplayOptions{})
}

// replayLoop replays the spool whenever it holds events and the broker is
// reachable, checking every interval, until ctx ends.
func (p *Publisher) replayLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.spool.Entries() == 0 || !p.reachable(ctx) {
			continue
		}
		start := time.Now()
		res, err := p.Replay(ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			p.log.Error("domainevents: spool replay failed", "component", "spool replay", "spool", p.spool.Dir(), "err", err)
			continue
		}
		if res.Total > 0 {
			p.log.Info("domainevents: spool replayed", "component", "spool replay", "spool", p.spool.Dir(),
				"replayed", res.Published, "of", res.Total, "failed_again", res.Failed, "took", time.Since(start))
		}
	}
}

// reachable asks the adapter whether the broker answers, within 5s.
func (p *Publisher) reachable(ctx context.Context) bool {
	if p.health == nil {
		return true
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.health.Health(hctx) == nil
}

// replayTarget publishes a spooled message through the adapter; a message
// the broker refuses for good goes to its dead-letter queue instead of
// staying in the spool forever.
type replayTarget struct {
	adapter broker.Broker
	dlq     broker.DeadLetterSink
}

func (r replayTarget) Publish(ctx context.Context, m broker.Message) error {
	err := r.adapter.Publish(ctx, m)
	if !broker.RefusedForGood(err) || r.dlq == nil {
		return err // stays in the spool: only a refusal for good moves it
	}
	if derr := r.dlq.Put(ctx, broker.NewDeadLetter(m, err, 1, time.Time{}, time.Now())); derr != nil {
		return errors.Join(err, derr)
	}
	return nil // out of the spool: in the broker's dead-letter queue
}

func (r replayTarget) Close(context.Context) error { return nil }
