package rabbittest_test

import (
	"os"
	"testing"

	"github.com/domainevents/domainevents/internal/rabbittest"
)

func TestMain(m *testing.M) { os.Exit(rabbittest.Main(m)) }
