package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cli runs the command with args and returns what it printed.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), &out, args)
	return out.String(), err
}

// Bad commands, subcommands, flags and arguments are errors that name
// them; -h is not an error.
func TestDispatchErrors(t *testing.T) {
	for _, c := range []struct {
		args    []string
		mention string
	}{
		{nil, "want a command"},
		{[]string{"explode"}, `unknown command "explode"`},
		{[]string{"spool"}, "spool: want a subcommand: list, replay"},
		{[]string{"outbox", "purge"}, `outbox: unknown subcommand "purge": want one of list, redrive`},
		{[]string{"dlq", "list", "--bogus"}, "-bogus"},
		{[]string{"outbox", "list", "--limit", "many"}, "-limit"},
		{[]string{"outbox", "redrive", "--older-than", "soon"}, "-older-than"},
		{[]string{"outbox", "list", "stray"}, `unexpected argument "stray"`},
		{[]string{"outbox", "list", "--limit", "-1", "--database-url", "x.db"}, "--limit -1"},
		{[]string{"spool", "list", "--dry-run"}, "-dry-run"},
	} {
		_, err := cli(t, c.args...)
		require.Error(t, err, "%v", c.args)
		assert.Contains(t, err.Error(), c.mention, "%v", c.args)
	}
	for _, args := range [][]string{{"help"}, {"outbox", "redrive", "-h"}, {"dlq", "list", "--help"}} {
		_, err := cli(t, args...)
		assert.NoError(t, err, "%v", args)
	}
}

// A database URL's password never shows in an error, whatever the form.
func TestDatabaseErrorsHidePassword(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	_, err := cli(t, "outbox", "list")
	require.ErrorContains(t, err, "DATABASE_URL")
	for _, url := range []string{
		"postgres://orders:s3cr%40t-pw@127.0.0.1:1/orders?connect_timeout=2",
		"postgres://orders:s3cr@t-pw@127.0.0.1:1/orders",
		"mysql://orders:s3cr@t-pw@tcp(127.0.0.1:1)/orders?timeout=2s",
		"orders:s3cr@t-pw@tcp(127.0.0.1:1)/orders",
		"oracle://orders:s3cr@t-pw@db/orders",
	} {
		_, err := cli(t, "outbox", "list", "--database-url", url)
		require.Error(t, err, url)
		assert.NotContains(t, err.Error(), "s3cr", url)
		assert.Contains(t, err.Error(), "--database-url", url)
	}
	assert.Equal(t, "dial postgres://u:xxxxx@h", scrub("dial postgres://u:p%40ss@h", "postgres://u:p%40ss@h/db"))
	assert.Equal(t, "auth p@ss failed: xxxxx", scrub("auth p@ss failed: pw", "host=h password=pw user=u"))
}
