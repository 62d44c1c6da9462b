package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/deadletter"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/noop"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: deadletters list|replay\n\nspool: $DEADLETTER_DIR (default %s)\n", spoolDir())
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, log, os.Stdout, flag.Args()); err != nil {
		log.Error("deadletters failed", "err", err)
		os.Exit(1)
	}
}

// spoolDir is where the examples keep their spool.
func spoolDir() string {
	if d := os.Getenv("DEADLETTER_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "domainevents-spool")
}

func run(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	if len(args) != 1 || (args[0] != "list" && args[0] != "replay") {
		flag.Usage()
		return errors.New("want one command: list or replay")
	}
	spool, err := deadletter.OpenSpool(spoolDir())
	if err != nil {
		return err
	}
	defer spool.Close()
	if args[0] == "list" {
		return list(out, spool)
	}
	return replay(ctx, log, out, spool)
}

func list(out io.Writer, spool *deadletter.Spool) error {
	n := 0
	rep, err := spool.Scan(func(d broker.DeadLetter) error {
		n++
		reason := d.Reason
		if len(reason) > 160 {
			reason = reason[:160] + "..."
		}
		_, err := fmt.Fprintf(out, "%s  %-22s key=%s  %s  attempts=%d  last=%s  %s\n", d.Message.ID, d.Message.Name,
			d.Message.Key, d.Category, d.Attempts, d.LastFailure.Format(time.RFC3339), reason)
		return err
	})
	if err != nil {
		return err
	}
	for _, t := range rep.Torn {
		fmt.Fprintf(out, "torn record skipped: %s at offset %d (%d bytes): a write cut short by a crash\n", t.File, t.Offset, t.Bytes)
	}
	fmt.Fprintf(out, "%d event(s) in %s\n", n, spool.Dir())
	return nil
}

func replay(ctx context.Context, log *slog.Logger, out io.Writer, spool *deadletter.Spool) error {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	var b broker.Broker
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	switch {
	case !cfg.Enabled:
		log.Warn("MESSAGE_BROKER_ENABLED is false: replaying to the noop broker discards the events")
		b = noop.New()
	case cfg.Type == broker.RabbitMQ:
		b, err = rabbitmq.New(cctx, cfg, rabbitmq.WithLogger(log))
	case cfg.Type == broker.Kafka:
		b, err = kafka.New(cctx, cfg, kafka.WithLogger(log))
	}
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	}()
	res, err := spool.Replay(ctx, b, deadletter.ReplayOptions{Progress: func(r deadletter.ReplayResult) {
		fmt.Fprintf(out, "replayed %d/%d (failed again: %d)\n", r.Published, r.Total, r.Failed)
	}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "done: %d published, %d failed again and kept in %s\n", res.Published, res.Failed, spool.Dir())
	if res.Failed > 0 {
		return fmt.Errorf("%d event(s) failed again", res.Failed)
	}
	return nil
}
