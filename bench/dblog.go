package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// summarizeDBLog (-db-log FILE) sums a database server's own timing of
// each statement by kind (the kinds of dbcount.go): server-side time,
// without the network and the client. FILE is either an excerpt of
// PostgreSQL's log written with log_min_duration_statement=0 (one entry
// per protocol phase: parse, bind, execute, or a simple statement), or a
// MariaDB slow log written with long_query_time=0 (Query_time and
// Rows_examined per statement).
//
//	go run . -suites drain-rabbitmq -only outbox-postgres -rounds 1 -pg-options '-c log_min_duration_statement=0'
//	go run . -db-log excerpt.log
func summarizeDBLog(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type acc struct {
		calls                  int
		ms, examined, sent     float64
		parseMs, bindMs, execs float64
	}
	kinds := map[string]*acc{}
	get := func(k string) *acc {
		a := kinds[k]
		if a == nil {
			a = &acc{}
			kinds[k] = a
		}
		return a
	}
	pgEntry := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`)
	pgDur := regexp.MustCompile(`duration: ([0-9.]+) ms  (parse|bind|execute|statement)( [^:]*)?: (.*)$`)
	myTime := regexp.MustCompile(`Query_time: ([0-9.]+)\s+Lock_time: [0-9.]+\s+Rows_sent: (\d+)\s+Rows_examined: (\d+)`)

	var mysql bool
	var cur struct {
		phase string
		ms    float64
		sql   strings.Builder
		sent  float64
		exam  float64
		open  bool
	}
	flush := func() {
		if !cur.open {
			return
		}
		cur.open = false
		q := cur.sql.String()
		k := statementKind(q)
		a := get(k)
		switch cur.phase {
		case "parse":
			a.parseMs += cur.ms
		case "bind":
			a.bindMs += cur.ms
		default:
			a.calls++
			a.ms += cur.ms
			a.examined += cur.exam
			a.sent += cur.sent
		}
		cur.sql.Reset()
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# Query_time:"):
			flush()
			mysql = true
			m := myTime.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			secs, _ := strconv.ParseFloat(m[1], 64)
			sent, _ := strconv.ParseFloat(m[2], 64)
			exam, _ := strconv.ParseFloat(m[3], 64)
			cur.open, cur.phase, cur.ms, cur.sent, cur.exam = true, "execute", secs*1000, sent, exam
		case mysql && (strings.HasPrefix(line, "# ") || strings.HasPrefix(line, "SET timestamp=") || strings.HasPrefix(line, "use ")):
			if strings.HasPrefix(line, "# Time:") || strings.HasPrefix(line, "# User@Host:") {
				flush()
			}
		case pgEntry.MatchString(line):
			flush()
			m := pgDur.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			ms, _ := strconv.ParseFloat(m[1], 64)
			cur.open, cur.phase, cur.ms, cur.sent, cur.exam = true, m[2], ms, 0, 0
			cur.sql.WriteString(m[4] + "\n")
		default:
			if cur.open {
				cur.sql.WriteString(line + "\n")
			}
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return err
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	slices.Sort(names)
	if mysql {
		fmt.Println("| statement | calls | total ms | mean ms | rows examined/call | rows sent/call |")
		fmt.Println("|---|---:|---:|---:|---:|---:|")
	} else {
		fmt.Println("| statement | executions | total ms (execute) | mean ms | parse ms total | bind ms total |")
		fmt.Println("|---|---:|---:|---:|---:|---:|")
	}
	for _, k := range names {
		a := kinds[k]
		mean := 0.0
		if a.calls > 0 {
			mean = a.ms / float64(a.calls)
		}
		if mysql {
			fmt.Printf("| %s | %d | %.1f | %.3f | %.0f | %.1f |\n", k, a.calls, a.ms, mean, a.examined/max(1, float64(a.calls)), a.sent/max(1, float64(a.calls)))
		} else {
			fmt.Printf("| %s | %d | %.1f | %.3f | %.1f | %.1f |\n", k, a.calls, a.ms, mean, a.parseMs, a.bindMs)
		}
	}
	return nil
}
