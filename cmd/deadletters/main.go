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
	"time"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/deadletter"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: deadletters list|replay\n\n"+
			"The spool and the broker come from the MESSAGE_BROKER_* variables, as for the service.\n")
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, log, os.Stdout, flag.Args()); err != nil {
		log.Error("deadletters failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	if len(args) != 1 || (args[0] != "list" && args[0] != "replay") {
		flag.Usage()
		return errors.New("want one command: list or replay")
	}
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	dir := domainevents.SpoolDir(cfg)
	if args[0] == "list" {
		return list(out, dir)
	}
	return replay(ctx, log, out, cfg, dir)
}

// list reads the spool without its lock: it works while the service runs.
func list(out io.Writer, dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		_, err := fmt.Fprintf(out, "0 event(s): %s does not exist\n", dir)
		return err
	}
	n := 0
	rep, err := deadletter.Inspect(dir, func(d broker.DeadLetter) error {
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
	_, err = fmt.Fprintf(out, "%d event(s) in %s\n", n, dir)
	return err
}

// replay opens the spool (refused while a service owns it) and the broker
// the way the service does, and replays.
func replay(ctx context.Context, log *slog.Logger, out io.Writer, cfg broker.Config, dir string) error {
	if !cfg.Enabled {
		return errors.New("MESSAGE_BROKER_ENABLED is false: there is no broker to replay to")
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pub, err := domainevents.Open(cctx, cfg, domainevents.WithLogger(log), domainevents.WithSpoolDir(dir),
		domainevents.WithWaitForConnection(), domainevents.WithReplayInterval(0))
	if errors.Is(err, deadletter.ErrLocked) {
		return fmt.Errorf("%w\n(the service replays its spool by itself once the broker is back; stop it to replay from here)", err)
	}
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = pub.Close(ctx)
	}()
	res, err := pub.Replay(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "replayed %d/%d (failed again: %d)\n", res.Published, res.Total, res.Failed)
	if res.Failed > 0 {
		return fmt.Errorf("%d event(s) failed again and stay in %s", res.Failed, dir)
	}
	return nil
}
