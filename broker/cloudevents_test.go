package broker_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/domainevents/domainevents/broker"
)

func TestCloudEventsHeaders(t *testing.T) {
	m := broker.Message{ID: "id-1", Name: "order.created", Key: "order-1"}
	when := time.Date(2026, 11, 30, 10, 15, 30, 123_000_000, time.FixedZone("CET", 3600))
	var got [][2]string
	broker.CloudEventsHeaders("ce_", "/orders", m, when, func(k, v string) { got = append(got, [2]string{k, v}) })
	want := [][2]string{
		{"ce_id", "id-1"}, {"ce_source", "/orders"}, {"ce_specversion", "1.0"},
		{"ce_type", "order.created"}, {"ce_time", "2026-11-30T09:15:30.123Z"}, {"ce_partitionkey", "order-1"},
	}
	if len(got) != len(want) {
		t.Fatalf("headers %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("header %d = %v, want %v", i, got[i], want[i])
		}
	}
	m.Key = ""
	got = nil
	broker.CloudEventsHeaders("cloudEvents:", "/orders", m, when, func(k, v string) { got = append(got, [2]string{k, v}) })
	if len(got) != 5 || got[0][0] != "cloudEvents:id" {
		t.Errorf("without a key: %v, want five cloudEvents: headers and no partitionkey", got)
	}
}

func TestFromCloudEvents(t *testing.T) {
	prefixes := []string{broker.CloudEventsPrefixAMQP, broker.CloudEventsPrefixAMQPAlt, broker.CloudEventsPrefixHTTP}
	t.Run("fills what is empty, under each prefix", func(t *testing.T) {
		for _, p := range prefixes {
			m := broker.Message{Headers: map[string]string{
				p + "specversion": "1.0", p + "id": "e-1", p + "type": "payment.captured", p + "source": "/payments",
				p + "time": "2026-12-01T08:00:00.5Z", p + "partitionkey": "k-1", p + "datacontenttype": "application/json",
			}}
			if !broker.FromCloudEvents(&m, prefixes...) {
				t.Fatalf("%s: not recognised", p)
			}
			if m.ID != "e-1" || m.Name != "payment.captured" || m.Key != "k-1" || m.ContentType != "application/json" ||
				!m.Time.Equal(time.Date(2026, 12, 1, 8, 0, 0, 500_000_000, time.UTC)) {
				t.Errorf("%s: %+v", p, m)
			}
			if m.Headers[p+"source"] != "/payments" {
				t.Errorf("%s: the source left Headers", p)
			}
		}
	})
	t.Run("keeps what is set", func(t *testing.T) {
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		m := broker.Message{ID: "ours", Name: "order.created", Key: "o-1", ContentType: "text/plain", Time: at,
			Headers: map[string]string{"ce_specversion": "1.0", "ce_id": "theirs", "ce_type": "x", "ce_partitionkey": "y", "ce_time": "2027-01-01T00:00:00Z"}}
		if !broker.FromCloudEvents(&m, "ce_") {
			t.Fatal("not recognised")
		}
		if m.ID != "ours" || m.Name != "order.created" || m.Key != "o-1" || m.ContentType != "text/plain" {
			t.Errorf("overwrote a field: %+v", m)
		}
		if want := at.AddDate(1, 0, 0); !m.Time.Equal(want) {
			t.Errorf("time %v, want the attribute's %v (more precise than a timestamp property)", m.Time, want)
		}
	})
	t.Run("no specversion, no CloudEvent", func(t *testing.T) {
		m := broker.Message{Headers: map[string]string{"ce_id": "e-1", "ce_type": "x"}}
		if broker.FromCloudEvents(&m, "ce_") || m.ID != "" {
			t.Errorf("recognised without specversion: %+v", m)
		}
	})
	t.Run("a bad time is left out", func(t *testing.T) {
		m := broker.Message{Headers: map[string]string{"ce_specversion": "1.0", "ce_time": "yesterday"}}
		broker.FromCloudEvents(&m, "ce_")
		if !m.Time.IsZero() {
			t.Errorf("time %v from %q", m.Time, "yesterday")
		}
	})
}

func TestWrittenByCloudEventsHeaders(t *testing.T) {
	for name, want := range map[string]bool{
		"ce_id": true, "ce_partitionkey": true, "ce_time": true, "ce_subject": false, "ce_": false,
		"cloudEvents:id": false, "traceparent": false, "event-id": false,
	} {
		if got := broker.WrittenByCloudEventsHeaders("ce_", name); got != want {
			t.Errorf("%q: %t, want %t", name, got, want)
		}
	}
}

func TestCloudEventsSourceConfig(t *testing.T) {
	env := map[string]string{broker.EnvCloudEventsSource: "/orders-service"}
	c, err := broker.LoadConfig(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil || c.CloudEventsSource != "/orders-service" {
		t.Fatalf("LoadConfig = %q, %v", c.CloudEventsSource, err)
	}
	env[broker.EnvCloudEventsSource] = "%zz"
	_, err = broker.LoadConfig(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if !errors.Is(err, broker.ErrInvalid) {
		t.Fatalf("bad source: err %v, want ErrInvalid", err)
	}
	if want := `MESSAGE_BROKER_CLOUDEVENTS_SOURCE="%zz": want a URI-reference`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if def := broker.DefaultConfig().CloudEventsSource; def != "" {
		t.Errorf("default source %q, want empty (CloudEvents off)", def)
	}
	if err := broker.CheckCloudEventsSource(""); !errors.Is(err, broker.ErrCloudEventsSource) {
		t.Errorf("empty source: %v", err)
	}
}
