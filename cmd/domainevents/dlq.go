package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

// runDLQ lists or re-drives the broker's dead-letter queue (RabbitMQ) or
// topic (Kafka).
func runDLQ(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return dispatch(ctx, log, out, "dlq", []subcommand{
		{"list", func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
			return dlq(ctx, log, out, "list", args)
		}},
		{"redrive", func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
			return dlq(ctx, log, out, "redrive", args)
		}},
	}, args)
}

// dlq lists (action "list": a dry run) or re-drives the dead letters the
// flags select.
func dlq(ctx context.Context, log *slog.Logger, out io.Writer, action string, args []string) error {
	fs := newFlags("dlq "+action, map[string]string{
		"list": "Lists the dead letters of the broker's dead-letter queue (RabbitMQ) or topic (Kafka), with why.\n" +
			"The broker comes from the MESSAGE_BROKER_* variables, as for the service.",
		"redrive": "Moves the dead letters the flags select back to where they were first published: RabbitMQ their\n" +
			"exchange and routing key, Kafka their topic. Each is removed from the dead-letter queue or topic only\n" +
			"once the broker confirmed it (at least once: a crash in between leaves a duplicate).\n" +
			"A re-driven event arrives after those published since it died: consumers may see it after later ones.",
	}[action])
	name := fs.String("dlq", "", "the dead-letter queue or topic (default RabbitMQ: $MESSAGE_BROKER_QUEUE.dlq, or <exchange>.dlq\n"+
		"without a queue; Kafka: <topic>.dlq)")
	var o broker.RedriveOptions
	fs.StringVar(&o.Name, "name", "", "only dead letters of this event name")
	fs.StringVar(&o.ID, "id", "", "only the dead letter of this event id")
	fs.StringVar(&o.Reason, "reason", "", "only dead letters whose reason or category contains this text, ignoring case")
	fs.IntVar(&o.Limit, "limit", 0, "at most this many dead letters (0: all)")
	sasl := fs.String("sasl", "", "Kafka: the SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) for MESSAGE_BROKER_USERNAME/PASSWORD")
	body := false
	if action == "list" {
		fs.BoolVar(&body, "body", false, "print each dead letter's body and headers too")
		o.DryRun = true
	} else {
		fs.BoolVar(&o.DryRun, "dry-run", false, "say what would be re-driven; move nothing")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.Limit < 0 {
		return fmt.Errorf("--limit %d: want 0 (all) or more", o.Limit)
	}
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if !cfg.Enabled {
		return errors.New("MESSAGE_BROKER_ENABLED is false: there is no broker to read dead letters from")
	}
	var res broker.RedriveResult
	switch cfg.Type {
	case broker.RabbitMQ:
		if *sasl != "" {
			return errors.New("--sasl is for Kafka: RabbitMQ takes MESSAGE_BROKER_USERNAME/PASSWORD as they are")
		}
		if *name == "" {
			*name = cfg.Exchange + ".dlq"
			if cfg.Queue != "" {
				*name = cfg.Queue + ".dlq"
			}
		}
		res, err = rabbitmq.Redrive(ctx, cfg, *name, o, rabbitmq.WithLogger(log))
	case broker.Kafka:
		if *name == "" {
			*name = cfg.Topic + ".dlq"
		}
		opts := []kafka.Option{kafka.WithLogger(log)}
		if *sasl != "" {
			opts = append(opts, kafka.WithSASL(*sasl))
		}
		res, err = kafka.Redrive(ctx, cfg, *name, o, opts...)
	default:
		return fmt.Errorf("%s=%q: want rabbitmq or kafka", broker.EnvType, cfg.Type)
	}
	for _, s := range res.Selected {
		where := s.To.Name
		if s.To.RoutingKey != "" {
			where += " " + s.To.RoutingKey
		}
		status := ""
		switch {
		case s.Err != nil:
			status = "  NOT MOVED: " + clip(s.Err.Error())
		case !o.DryRun:
			status = "  moved"
		}
		last := ""
		if !s.LastFailure.IsZero() {
			last = "  last=" + s.LastFailure.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(out, "%s  %-22s -> %s  %s  attempts=%d%s  %s%s\n", s.Message.ID, s.Message.Name, where, s.Category,
			s.Attempts, last, clip(s.Reason), status)
		if body {
			fmt.Fprintf(out, "    key: %s\n    headers: %v\n    body: %s\n", s.Message.Key, s.Message.Headers, s.Message.Body)
		}
	}
	if err != nil {
		return fmt.Errorf("dlq %s %s: %w", action, *name, err)
	}
	switch {
	case action == "list":
		fmt.Fprintf(out, "%d dead letter(s) in %s (read %d)\n", len(res.Selected), *name, res.Scanned)
	case o.DryRun:
		fmt.Fprintf(out, "would move %d of the %d dead letter(s) read in %s (dry run: nothing moved)\n", len(res.Selected), res.Scanned, *name)
	default:
		fmt.Fprintf(out, "moved %d/%d from %s (failed: %d)\n", res.Moved, len(res.Selected), *name, res.Failed())
		if res.Failed() > 0 {
			return fmt.Errorf("%d dead letter(s) could not be moved and stay in %s: %w", res.Failed(), *name, res.Err())
		}
	}
	return nil
}
