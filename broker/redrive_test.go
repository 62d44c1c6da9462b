package broker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
)

// ParseDeadLetter reads back what Annotated wrote, and leaves the
// message's own headers.
func TestParseDeadLetterInvertsAnnotated(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 15, 30, 123000000, time.UTC)
	d := broker.DeadLetter{
		Message: broker.Message{ID: "id-1", Name: "order.created", Key: "o-1", Body: []byte(`{}`), Headers: map[string]string{"traceparent": "00-x"}},
		Reason:  "inventory service down", Category: broker.CategoryHandlerFailed, Attempts: 5,
		FirstFailure: at, LastFailure: at.Add(time.Minute),
	}
	got, ok := broker.ParseDeadLetter(d.Annotated())
	require.True(t, ok)
	assert.Equal(t, d, got)

	plain := broker.Message{ID: "id-2", Headers: map[string]string{"a": "b"}}
	got, ok = broker.ParseDeadLetter(plain)
	assert.False(t, ok, "no dead-letter headers")
	assert.Equal(t, broker.DeadLetter{Message: plain}, got)

	m := d.Annotated()
	delete(m.Headers, "traceparent")
	got, _ = broker.ParseDeadLetter(m)
	assert.Nil(t, got.Message.Headers, "none of its own")
	assert.Len(t, m.Headers, 5, "the argument's headers are not modified")
}

func TestRedriveOptionsMatches(t *testing.T) {
	d := broker.DeadLetter{Message: broker.Message{ID: "id-1", Name: "order.created"}, Reason: "Inventory service DOWN",
		Category: broker.CategoryHandlerFailed}
	for _, c := range []struct {
		name string
		o    broker.RedriveOptions
		want bool
	}{
		{"zero selects all", broker.RedriveOptions{}, true},
		{"name", broker.RedriveOptions{Name: "order.created"}, true},
		{"other name", broker.RedriveOptions{Name: "order.cancelled"}, false},
		{"id", broker.RedriveOptions{ID: "id-1"}, true},
		{"other id", broker.RedriveOptions{ID: "id-2"}, false},
		{"reason ignores case", broker.RedriveOptions{Reason: "service down"}, true},
		{"category", broker.RedriveOptions{Reason: "handler_failed"}, true},
		{"neither", broker.RedriveOptions{Reason: "too large"}, false},
		{"all must match", broker.RedriveOptions{Name: "order.created", ID: "id-2"}, false},
	} {
		assert.Equal(t, c.want, c.o.Matches(d), c.name)
	}
	err := broker.RedriveOptions{Limit: -1}.Validate()
	require.ErrorIs(t, err, broker.ErrInvalid)
	assert.Contains(t, err.Error(), "Limit -1")
}
