// Package health serves readiness probes and a status page over HTTP for
// the parts of a service that publish and consume events: the Publisher
// of domainevents.Open, subscribers, outbox relays and stores, adapters,
// and anything else with a Health(ctx) error method. Standard library
// only.
//
//	h := &health.Handler{}                                       // Timeout: 1s by default
//	h.Add("publisher", health.WithStatus(pub, pub.Status))       // spool depth, forwarder counters
//	h.Add("subscriber", sub)
//	h.Add("relay", health.WithStats(relay, relay.Stats))         // relay counters
//	h.Add("outbox", health.Backlog(store))                       // backlog and lag
//	mux.Handle("/healthz", h)
//	mux.Handle("/status", h)
//
// GET /healthz is for probes: 200 "ok", or 503 "unavailable" with one
// line per part that is not ready, naming it and saying why. GET /status
// is the JSON [Report] (same status codes), every part with its
// details:
//
//	{"status": "unavailable", "time": "2026-11-30T10:15:30Z",
//	 "parts": {"publisher": {"status": "unavailable", "error": "rabbitmq: publish: broker unavailable: ...",
//	                         "details": {"Destination": "...", "SpoolEntries": 3, ...}},
//	           "outbox": {"status": "ok", "details": {"Rows": 12, "LagSeconds": 0.4}}}}
//
// A part added with [Handler.AddOptional] is reported but does not fail
// the probe ("degraded", 200): a service whose events wait safely in the
// outbox or the spool while the broker is down can keep taking requests.
//
// # Bounded
//
// Every request answers by [Handler.Timeout] whatever its parts do: a part
// that has not answered by then is reported as such. Requests that come
// while a part's check is still running wait for that check instead of
// starting another, so a part that hangs costs one goroutine, not one per
// probe. The library's Health methods do not touch the network (they
// report what the adapter last learned); an outbox relay's pings its
// database, and [Backlog] queries it.
package health
