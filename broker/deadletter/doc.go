// Package deadletter stores messages that could not be published, so that
// nothing is silently lost, and replays them.
//
// A broker.DeadLetterSink takes a broker.DeadLetter: the original message
// unchanged (body, headers, key, name, id) plus the reason, its category,
// the attempt count and the first and last failure times. Put returns nil
// only once the entry is safe.
//
// Two kinds of sink exist:
//
//   - [Spool], a durable local store for when the broker cannot be reached:
//     append-only segment files in one directory, every record length-prefixed
//     and CRC-32C checksummed, fsync'd before Put returns. It is bounded
//     ([WithMaxBytes], default 1 GiB; beyond it Put fails with [ErrFull]).
//     After a crash, a record torn at a segment's tail is skipped and
//     reported; earlier records are intact. [Spool.Replay] re-publishes the
//     entries and removes only those the broker confirmed.
//   - broker-side destinations for messages the broker is up but refuses
//     (unroutable, nacked, too large): rabbitmq.NewDeadLetterSink (exchange
//     "<exchange>.dlx", queue "<exchange>.dlq") and kafka.NewDeadLetterSink
//     (topic "<topic>.dlq"), both a broker.BrokerSink. They publish
//     broker.DeadLetter.Annotated: the message with the reason as the
//     broker.HeaderDeadLetter* headers.
//
// The broker/retry package decides what goes where.
//
// # One owner
//
// A spool directory has one owner: [OpenSpool] takes an exclusive lock on
// it (flock on its LOCK file, which holds the owner's pid) until
// [Spool.Close]. Another opener, in this process or another, gets an error
// matching [ErrLocked] that names the owner. The kernel drops the lock when
// the owner dies, kill -9 included. So a replay runs in the process that
// owns the spool ([Spool.Replay]; domainevents.Open replays automatically
// once the broker is back), and the replay command refuses while a service
// holds the spool.
//
// # Replay semantics
//
// Replay is at least once: a segment is deleted (or replaced by one holding
// its unconfirmed entries) only after each of its entries was confirmed or
// written there, so a crash mid-replay loses nothing
// and the next replay may publish some entries again with the same message
// id. Consumers deduplicate on the id. Entries of one key are replayed in
// their spooled order: one that fails stays where it was, and its key's
// later entries wait behind it for the next replay.
package deadletter
