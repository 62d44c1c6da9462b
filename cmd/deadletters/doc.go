// Command deadletters lists the events in a service's local dead-letter
// spool, and replays them to the broker when the service is not running.
//
//	go install github.com/domainevents/domainevents/cmd/deadletters@latest
//	deadletters list      # one line per spooled event, with its reason; works while the service runs
//	deadletters replay    # publish them; remove what the broker confirmed
//
// It reads the same MESSAGE_BROKER_* variables as the service, so it finds
// the same spool (MESSAGE_BROKER_SPOOL_DIR, or the default named after
// MESSAGE_BROKER_CLIENT_ID) and the same broker. A running service owns its
// spool and replays it by itself once the broker is back: replay refuses
// then, naming the service's pid. Events the broker refuses for good go to
// its dead-letter queue; those that still cannot be delivered stay in the
// spool with their new reason, and replay exits non-zero.
package main
