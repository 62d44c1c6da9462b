package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/deadletter"
)

// runSpool lists or replays the local spool of a service (see the
// package doc).
func runSpool(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return dispatch(ctx, log, out, "spool", []subcommand{
		{"list", spoolList},
		{"replay", spoolReplay},
	}, args)
}

// spoolDir is the spool of the service the MESSAGE_BROKER_* variables
// describe, after the flags (none but -h).
func spoolDir(name string, args []string) (broker.Config, string, error) {
	fs := newFlags("spool "+name, "The spool and the broker come from the MESSAGE_BROKER_* variables, as for the service.")
	if err := parse(fs, args); err != nil {
		return broker.Config{}, "", err
	}
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return cfg, "", fmt.Errorf("configuration: %w", err)
	}
	return cfg, domainevents.SpoolDir(cfg), nil
}

// spoolList reads the spool without its lock: it works while the service
// runs.
func spoolList(_ context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	_, dir, err := spoolDir("list", args)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		_, err := fmt.Fprintf(out, "0 event(s): %s does not exist\n", dir)
		return err
	}
	n := 0
	rep, err := deadletter.Inspect(dir, func(d broker.DeadLetter) error {
		n++
		_, err := fmt.Fprintf(out, "%s  %-22s key=%s  %s  attempts=%d  last=%s  %s\n", d.Message.ID, d.Message.Name,
			d.Message.Key, d.Category, d.Attempts, d.LastFailure.Format(time.RFC3339), clip(d.Reason))
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

// spoolReplay opens the spool (refused while a service owns it) and the
// broker the way the service does, and replays.
func spoolReplay(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	cfg, dir, err := spoolDir("replay", args)
	if err != nil {
		return err
	}
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
