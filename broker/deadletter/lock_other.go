//go:build !unix

package deadletter

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lockDir takes the spool directory's lock where flock is not available: a
// LOCK file created exclusively, holding the owner's pid, removed by
// Close. A crash leaves it behind; the error then says to remove it once no
// process uses the spool.
func lockDir(dir string) (release func() error, err error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, fs.ErrExist) {
		b, _ := os.ReadFile(path)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return nil, fmt.Errorf("%w (if no process uses it any more, remove %s)", &LockedError{Dir: dir, PID: pid}, path)
	}
	if err != nil {
		return nil, err
	}
	_, _ = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	_ = f.Close()
	return func() error { return os.Remove(path) }, nil
}
