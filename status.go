package domainevents

import (
	"encoding/json"

	"github.com/domainevents/domainevents/bridge"
)

// MarshalJSON writes s for status pages (health.WithStatus(pub,
// pub.Status) serves it): Err as its text, omitted when nil; the other
// fields as they are named.
func (s Status) MarshalJSON() ([]byte, error) {
	var errText string
	if s.Err != nil {
		errText = s.Err.Error()
	}
	return json.Marshal(struct {
		Destination  string
		Err          string `json:",omitempty"`
		SpoolEntries int64
		SpoolBytes   int64
		Forwarder    bridge.Stats
	}{s.Destination, errText, s.SpoolEntries, s.SpoolBytes, s.Forwarder})
}
