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
	"strings"
)

// command is one subcommand: its name, a line of help, and what runs it
// with the arguments after its name.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error
}

// commands are the subcommands, in the order the usage lists them.
var commands = []command{
	{"spool", "list or replay the local spool: spool list|replay", runSpool},
	{"outbox", "list or re-drive the outbox's dead rows: outbox list|redrive", runOutbox},
	{"dlq", "list or re-drive the broker's dead-letter queue or topic: dlq list|redrive", runDLQ},
	{"contracts", "write the JSON Schema and AsyncAPI contracts of the order events", runContracts},
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, log, os.Stdout, os.Args[1:]); err != nil {
		log.Error("domainevents failed", "err", err)
		stop()
		os.Exit(1)
	}
}

// run dispatches args[0] to its command.
func run(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stderr)
		if len(args) == 0 {
			return fmt.Errorf("want a command: %s", names())
		}
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, log, out, args[1:])
		}
	}
	usage(os.Stderr)
	return fmt.Errorf("unknown command %q: want one of %s", args[0], names())
}

func names() string {
	n := make([]string, len(commands))
	for i, c := range commands {
		n[i] = c.name
	}
	return strings.Join(n, ", ")
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: domainevents <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\n'domainevents <command> -h' describes a command's flags.\n")
}

// subcommand is one action of a command (spool list, outbox redrive...).
type subcommand struct {
	name string
	run  func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error
}

// dispatch runs the subcommand args[0] of command name.
func dispatch(ctx context.Context, log *slog.Logger, out io.Writer, name string, subs []subcommand, args []string) error {
	var known []string
	for _, s := range subs {
		known = append(known, s.name)
	}
	if len(args) == 0 {
		return fmt.Errorf("%s: want a subcommand: %s", name, strings.Join(known, ", "))
	}
	for _, s := range subs {
		if s.name == args[0] {
			if err := s.run(ctx, log, out, args[1:]); !errors.Is(err, flag.ErrHelp) {
				return err
			}
			return nil
		}
	}
	return fmt.Errorf("%s: unknown subcommand %q: want one of %s", name, args[0], strings.Join(known, ", "))
}
