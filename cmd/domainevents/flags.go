package main

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
)

// newFlags is the flag set of "domainevents <name>", whose usage prints
// doc and the flags.
func newFlags(name, doc string) *flag.FlagSet {
	fs := flag.NewFlagSet("domainevents "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: domainevents %s [flags]\n\n%s\n\n", name, doc)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args into fs; an argument left over is an error naming it.
// -h returns flag.ErrHelp, which dispatch turns into success.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (flags come as --name value)", fs.Name(), fs.Arg(0))
	}
	return nil
}

// clip shortens a reason for a one-line listing.
func clip(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 160 {
		return s[:160] + "..."
	}
	return s
}

// scrub removes the password dsn carries from text (an error of a
// database driver may quote its DSN).
func scrub(text, dsn string) string {
	for _, pw := range passwords(dsn) {
		if pw != "" {
			text = strings.ReplaceAll(text, pw, "xxxxx")
		}
	}
	return text
}

// passwords finds the password in a DSN, as written and unescaped:
// user:password@host (URL or go-sql-driver form) or password=... (key/value
// form).
func passwords(dsn string) []string {
	var pw string
	if i := strings.Index(dsn, "password="); i >= 0 {
		pw = dsn[i+len("password="):]
		if j := strings.IndexAny(pw, " &"); j >= 0 {
			pw = pw[:j]
		}
		pw = strings.Trim(pw, "'")
	} else {
		rest := dsn
		if i := strings.Index(rest, "://"); i >= 0 {
			rest = rest[i+3:]
		}
		at := strings.LastIndex(rest, "@")
		if at < 0 {
			return nil
		}
		user := rest[:at]
		i := strings.IndexByte(user, ':')
		if i < 0 {
			return nil
		}
		pw = user[i+1:]
	}
	out := []string{pw}
	if u, err := url.QueryUnescape(pw); err == nil && u != pw {
		out = append(out, u)
	}
	return out
}
