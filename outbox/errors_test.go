package outbox_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/outbox"
)

// A database that fails reads as the database's failure, never as the
// broker's, keeps a category to branch on, and does not echo the DSN's
// password.
func TestDatabaseErrorsNameTheDatabase(t *testing.T) {
	const secret = "s3cret-pw"
	cases := []struct {
		name, driver, dsn string
		d                 outbox.Dialect
		require           func(testing.TB) *dbtest.DB
	}{
		{"postgres: no such database", "pgx", "postgres://postgres:" + secret + "@127.0.0.1:5432/tset_missing?sslmode=disable", outbox.Postgres, dbtest.RequirePostgres},
		{"mariadb: wrong password", "mysql", "root:" + secret + "@tcp(127.0.0.1:3306)/test", outbox.MySQL, dbtest.RequireMariaDB},
		{"sqlite: no such directory", "sqlite", "file:" + filepath.Join(t.TempDir(), "missing-"+secret, "x.db"), outbox.SQLite, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.require != nil {
				c.require(t) // skips (fails in CI) without the server
			}
			db, err := sql.Open(c.driver, c.dsn)
			require.NoError(t, err)
			defer db.Close()
			s, err := outbox.New(db, c.d)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for op, err := range map[string]error{
				"migrate": s.Migrate(ctx),
				"begin":   s.Transact(ctx, func(context.Context, *sql.Tx) error { return nil }),
			} {
				require.Error(t, err, op)
				t.Logf("%s: %v", op, err)
				assert.ErrorIs(t, err, outbox.ErrDatabase, op)
				assert.ErrorIs(t, err, broker.ErrUnavailable, op)
				assert.Contains(t, err.Error(), "outbox: database: "+op+": ")
				assert.NotContains(t, err.Error(), "broker")
				assert.NotContains(t, err.Error(), secret)
			}
		})
	}
}
