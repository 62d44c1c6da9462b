// Command deadletters lists the events in the local dead-letter spool and
// replays them to the broker the MESSAGE_BROKER_* environment names.
//
//	go run ./examples/deadletters list            # one line per spooled event, with its reason
//	go run ./examples/deadletters replay          # publish them; remove what the broker confirmed
//
// The spool directory is DEADLETTER_DIR (default: domainevents-spool in the
// system temp directory), the one examples/orders writes to. Replay prints a
// progress line per spool segment and exits non-zero if some events failed
// again (they stay in the spool, with the new reason).
package main
