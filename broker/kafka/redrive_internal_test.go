package kafka

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The commit metadata round-trips the moved offsets as ranges, stays under
// its size limit (dropping the highest offsets, moved again later), and a
// foreign or broken value reads as nothing moved.
func TestMovedMetadata(t *testing.T) {
	moved := map[int64]bool{3: true, 4: true, 5: true, 9: true, 11: true, 12: true}
	meta := formatMoved(moved)
	assert.Equal(t, "moved:3-5,9,11-12", meta)
	assert.Equal(t, moved, parseMoved(meta))
	assert.Equal(t, "", formatMoved(nil))
	for _, bad := range []string{"", "someone else's", "moved:x,7-3,8-", "moved:1-99999999999"} {
		assert.Empty(t, parseMoved(bad), bad)
	}
	many := map[int64]bool{}
	for i := range int64(5000) {
		many[i*2] = true // no two adjacent: one range each
	}
	meta = formatMoved(many)
	assert.LessOrEqual(t, len(meta), maxMetadata)
	back := parseMoved(meta)
	assert.Greater(t, len(back), 100)
	last := strings.LastIndexByte(meta, ',')
	n, err := strconv.ParseInt(meta[last+1:], 10, 64)
	assert.NoError(t, err)
	for o := range back {
		assert.LessOrEqual(t, o, n, "the lowest offsets are kept")
	}
}
