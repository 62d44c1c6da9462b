package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the unit of /proc/<pid>/stat's utime and stime
// (sysconf(_SC_CLK_TCK), 100 on every Linux this runs on).
const clockTicks = 100

// procCPU is the user+system CPU time of every process whose command name
// (/proc/<pid>/comm) is one of names, by pid: PostgreSQL's backends and
// auxiliary processes ("postgres"), MariaDB ("mariadbd"), RabbitMQ
// ("beam.smp"). pids adds processes by id (the kfake child).
type procCPU map[int]time.Duration

func readProcCPU(names []string, pids []int) procCPU {
	out := procCPU{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		want := false
		for _, p := range pids {
			want = want || p == pid
		}
		if !want && len(names) > 0 {
			comm, err := os.ReadFile(d + "/comm")
			if err != nil {
				continue
			}
			for _, n := range names {
				want = want || strings.TrimSpace(string(comm)) == n
			}
		}
		if !want {
			continue
		}
		if t, ok := statCPU(d + "/stat"); ok {
			out[pid] = t
		}
	}
	return out
}

// statCPU reads utime+stime from a /proc/<pid>/stat file.
func statCPU(path string) (time.Duration, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// fields are counted after its closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 { // f[0] is field 3 (state); utime is field 14, stime 15
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+s) * time.Second / clockTicks, true
}

// since is the CPU the processes spent between before and p: processes
// that started in between count from zero; those that ended are lost
// (a database's connections stay open through a run).
func (p procCPU) since(before procCPU) time.Duration {
	var d time.Duration
	for pid, t := range p {
		d += t - before[pid]
	}
	return d
}

// machineBusy reads /proc/stat's first line: busy and total jiffies of all
// CPUs.
func machineBusy() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, s := range f[1:] {
		v, _ := strconv.ParseInt(s, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// serverMeter measures, over a window, the CPU of the database and the
// broker processes and how busy the whole machine was.
type serverMeter struct {
	dbKind               string
	log                  int64
	dbNames, brokerNames []string
	brokerPIDs           []int
	db, broker           procCPU
	busy, total          int64
}

func startServerMeter(dbKind string, brokerNames []string, brokerPIDs []int) *serverMeter {
	m := &serverMeter{dbKind: dbKind, dbNames: dbProcesses(dbKind), brokerNames: brokerNames, brokerPIDs: brokerPIDs}
	if len(m.dbNames) > 0 {
		m.log = dbLogBytes(dbKind)
		m.db = readProcCPU(m.dbNames, nil)
	}
	m.broker = readProcCPU(brokerNames, brokerPIDs)
	m.busy, m.total = machineBusy()
	return m
}

// stop sets res's server columns per event of n. (The CPU is read before
// the log position: the query that reads it is not the run's.)
func (m *serverMeter) stop(res *result, n int64) {
	if n <= 0 {
		return
	}
	if len(m.dbNames) > 0 {
		res.DBCPUusPer = float64(readProcCPU(m.dbNames, nil).since(m.db)) / 1e3 / float64(n)
		if after := dbLogBytes(m.dbKind); m.log >= 0 && after >= m.log {
			res.DBLogBytesPer = float64(after-m.log) / float64(n)
		}
	}
	res.BrokerCPUusPer = float64(readProcCPU(m.brokerNames, m.brokerPIDs).since(m.broker)) / 1e3 / float64(n)
	busy, total := machineBusy()
	if total > m.total {
		res.MachineBusy = float64(busy-m.busy) / float64(total-m.total)
	}
}

// brokerProcesses names the broker's processes for a suite: RabbitMQ's
// Erlang VM, or the kfake child (BENCH_KFAKE_PID).
func brokerProcesses(suite string) (names []string, pids []int) {
	if strings.HasSuffix(suite, "kafka") {
		if p, err := strconv.Atoi(os.Getenv("BENCH_KFAKE_PID")); err == nil {
			return nil, []int{p}
		}
		return nil, nil
	}
	return []string{"beam.smp"}, nil
}

// dbProcesses names a database's server processes.
func dbProcesses(kind string) []string {
	switch kind {
	case "postgres":
		return []string{"postgres"}
	case "mysql":
		return []string{"mariadbd", "mysqld"}
	}
	return nil
}

// dbLogBytes reads how many bytes the database server has written to its
// log so far: PostgreSQL's WAL position, InnoDB's redo log
// (Innodb_os_log_written). It opens its own connection; -1 when it
// cannot tell.
func dbLogBytes(kind string) int64 {
	if kind == "" {
		return -1
	}
	d := benchDB(kind, "")
	db, err := sql.Open(d.driver, d.dsn)
	if err != nil {
		return -1
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int64
	if kind == "mysql" {
		var name string
		err = db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_os_log_written'").Scan(&name, &n)
	} else {
		err = db.QueryRowContext(ctx, "SELECT (pg_current_wal_lsn() - '0/0')::bigint").Scan(&n)
	}
	if err != nil {
		return -1
	}
	return n
}
