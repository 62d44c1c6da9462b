// Package outbox makes a service's events exist if and only if its
// database transaction commits, across crashes: the transactional outbox
// on the publishing side and the inbox on the consuming side, on
// PostgreSQL, MariaDB/MySQL and SQLite through database/sql.
//
// # Writing
//
// A [Store] is a broker.Broker that writes each message into the
// transaction its ctx carries, instead of sending it. Application code
// keeps publishing typed events through the bus:
//
//	store, _ := outbox.New(db, outbox.Postgres)
//	_ = store.Migrate(ctx)
//	fwd, _ := bridge.NewForwarder(store) // synchronous: the row is written before Publish returns
//	fwd.Attach(bus)
//
//	err := store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
//		if _, err := tx.ExecContext(ctx, "INSERT INTO orders ...", ...); err != nil {
//			return err
//		}
//		return eventbus.Publish(ctx, bus, events.OrderCreated{...}) // stored in tx
//	})
//
// The order row and its events commit together or not at all. A Publish
// outside a transaction is an error matching broker.ErrInvalid: nothing is
// ever published that did not commit. Use the forwarder synchronous (its
// default), not bridge.WithAsync: an asynchronous worker would publish
// after the transaction has ended. If you begin the transaction
// yourself, put it in ctx with [WithTx] and call [Store.Notify] after the
// commit (the relays poll anyway).
//
// Each message gets the next number of a per-key sequence (Key is the
// aggregate id, the order id): a counter row per key, updated in the same
// transaction and so locked until it ends. A rollback undoes the number; a
// later transaction on the same key waits for the earlier one. The
// sequence is gap-free and its order is the order in which the changes to
// that aggregate committed, which neither a transaction id nor an identity
// column gives: a transaction that took its id early can commit late.
// The relay sends the number with the message, in the broker.HeaderSeq
// header (both brokers; consumers read it as broker.Delivery.Seq), so that
// an [Inbox] can apply a key's events in that order. (A scheduled message
// is outside its key's sequence: see "Scheduled events".)
//
// # Relaying
//
// A [Relay] publishes the rows through any broker.Broker. It claims due
// rows in one statement (PostgreSQL, SQLite) or one short transaction at
// READ COMMITTED (MySQL, see below):
//
//	SELECT the heads of the keys: pending rows with no pending row of a
//	  lower seq in their key, due, whose lease is free or ran out, oldest
//	  first, LIMIT batch (PostgreSQL: the due rows in due order, each
//	  with one probe of the pending-rows index, until the batch is full;
//	  MySQL, SQLite: min(seq) GROUP BY key over the pending rows); then
//	  lock each one by id FOR UPDATE SKIP LOCKED, re-checking its state
//	  and lease
//	UPDATE them: lease_owner = me, lease_until = now + lease, attempts + 1
//
// and publishes the batch concurrently, each row once the row before it in
// its key is settled, so at most one message per key is in flight. A row is
// marked published only after the broker's confirm (Publish returned nil)
// and only if its lease_owner is still this relay:
//
//	UPDATE ... SET state = published WHERE id IN (...) AND lease_owner = me AND state = pending
//
// Why this is safe with several relays in several processes:
//
//   - Two relays never hold the same row: a claim locks the rows it picks
//     (SKIP LOCKED passes over rows another claim is taking) and re-checks
//     the lease on the latest committed row before taking it, so a row
//     leased meanwhile is not taken again until that lease runs out.
//   - Only a head is claimed, and a key's next row becomes the head only
//     once its predecessor is published or dead: one message per key in
//     flight, published in seq order. A claim can see a predecessor as
//     still pending when it was just settled (it then misses the new head
//     until the next claim), never the other way round, because a row of
//     seq n+1 commits only after the row of seq n committed (the counter
//     lock).
//   - Heads are decided on one consistent snapshot. MySQL's locking reads
//     see the latest committed rows while a derived table in the same
//     statement reads an older snapshot, so one SELECT ... FOR UPDATE could take
//     rows committed in between (seq 1, 2 and 3 of one transaction) all for
//     heads; on MySQL the relay therefore picks the heads with a plain read,
//     then locks those ids (SKIP LOCKED) re-checking each row's own state
//     and lease. That is enough because a head stays the head while it is
//     pending: published and dead are final.
//   - lease_owner changes only when a relay claims the row. A relay whose
//     lease ran out and whose row was taken over finds another owner when
//     it marks, and marks nothing (counted in [RelayStats].LostLeases): the
//     row is published twice, never lost, and the new owner's copy was
//     confirmed before the next row of its key was even claimed, so the
//     first arrival of every id is still in seq order. A relay whose
//     lease ran out while nobody took the row still marks it: nobody else
//     can have published it.
//   - A publish never outlives its lease ([WithPublishTimeout] < [WithLease]),
//     so a healthy relay settles its rows before anyone may take them.
//   - Times (due, lease) are the database's clock, the same for every
//     relay.
//
// Delivery is therefore at least once, in per-key order of first
// arrivals: a relay killed after the broker's confirm and before its mark
// leaves the row to be published again when the lease runs out, with the
// same message id, possibly after later rows of its key. Consumers
// deduplicate on the id (an [Inbox]); the tests count order on first
// arrivals.
//
// After marking a batch, a relay claims the next rows of exactly the keys
// it just published that have one (a few index probes, not a scan), so a
// key with a backlog keeps moving at the pace of the broker's confirms.
// The full claim runs when a transaction of this process commits through
// [Store.Transact] or [Store.Notify], when a failed or dead row lets its
// key move on, when there is room in flight again, and every poll interval
// ([WithPollInterval]) for rows committed by other processes and rows
// backing off; one that took 5 ms or more and found nothing is not
// repeated for three times its own duration, so that a deep backlog of
// keys in flight does not make every commit rescan it. On PostgreSQL the
// claims run on connections set to plan each claim for the table as it
// is (plan_cache_mode = force_custom_plan; see [Relay]): a generic plan
// cached while the table was nearly empty could cost a scan of the
// pending rows per head, and the relay would fall behind for good. No
// LISTEN/NOTIFY: it does not survive PgBouncer's transaction pooling, and
// the in-process wake-up covers the writer's own process.
//
// # Failures and poison messages
//
// A failed publish leaves its row pending, to be tried again; meanwhile
// its key waits, other keys flow. What happens next depends on the error's
// category, and only these errors can make a row dead:
//
//   - broker.ErrInvalid or broker.ErrTooLarge: the message can never be
//     published. Dead at its first failure.
//   - broker.ErrDeadLettered: the broker already put the message in a
//     dead-letter sink (a retry.Broker with one). Marked dead at once, not
//     published twice. (Put no retry layer with a spool in front of a
//     relay: the table is the durable store, and a spool would let a
//     key's later events overtake the spooled one.)
//   - An error of no category (a broker or middleware outside this module
//     that does not classify its errors), or a panic in Publish (recovered
//     by the relay): maybe the message's own fault. It backs off
//     ([WithBackoff]) and is dead at its [WithMaxAttempts]-th such
//     failure in the relay process.
//
// Every other failure is the broker's, and never makes a row dead, however
// long it lasts:
//
//   - broker.ErrUnavailable (unreachable, reconnecting, nacked, outcome
//     unknown), broker.ErrClosed, the publish's own deadline: the broker
//     is away. The row is tried again after a backoff capped at
//     [WithBrokerBackoff] (5 s), for as long as it takes. When publishes
//     have failed this way for a second with none succeeding, the relay
//     sends one row at a time until one goes through (a probe), instead
//     of piling copies into an adapter that cannot deliver them.
//   - broker.ErrUnroutable, broker.ErrUnauthorized, broker.ErrRejected:
//     the broker is up and its configuration refuses the message (no
//     queue bound, no permission). The row is held the same way, the
//     relay reports it loudly ([Relay.Health] returns an error of that
//     category with the broker's reason; the observer sees each retry;
//     an Error log line at most every 30 s) and publishes it once an
//     operator fixed it. Dead-lettering would lose the key's order: its
//     next event would overtake it.
//
// Attempts are counted in the attempts column all the same (every claim
// counts), for observability.
//
// When the broker comes back, the rows that were waiting go out at once,
// not after the backoff each had reached: the relay learns it from the
// broker's Health (broker.HealthChecker, which the RabbitMQ and Kafka
// adapters implement) turning nil after it had said the broker was down,
// or from the first publish that succeeds; it then makes every pending row
// that is backing off due (one UPDATE) and claims.
//
// Published rows are deleted after [WithRetention]; pending and dead rows
// never are.
//
// # Re-driving dead rows
//
// A dead row stays in the table with its last error. [Store.DeadRows]
// lists them (by key, id, name, reason, age) and [Store.Redrive] puts the
// same selection back to pending, attempts from 0, once the cause is
// fixed; the command domainevents does both ("domainevents outbox list",
// "domainevents outbox redrive --dry-run"). A re-driven row goes out
// after the rows of its key that were published while it was dead, and
// before those still pending; a key keeps at most one message in flight.
//
// # Scheduled events
//
// A message published with a ctx from [WithDeliverAt] is stored to be
// published at that time, not before ("send order.payment_reminder in 30
// minutes"), on any broker: its row's due time (next_attempt_at, the one
// retries push back) starts at the deliver-at time instead of now, and
// its deliver_at column keeps the time. The relay claims it once the
// database's clock reaches it, within a poll interval; the schedule lives
// in the table, so it survives any relay's restart or crash. The
// broker's return makes only rows past their time due, and
// [Store.Backlog] counts a scheduled row from its time.
//
// A scheduled message is not part of its key's order. Its row is in a
// lane of its own (msg_key "domainevents:at:" + its id, seq 1; the
// message's Key is kept in its stored headers and put back before
// publishing), takes no number of the key's sequence, and is published
// with its Key but without broker.HeaderSeq. Why: the relay publishes a
// key's rows one after the other, so a scheduled row in the key's lane
// would hold every later event of its order (its status updates) until
// its time; and a number in the key's sequence would leave a gap that the
// consumers' [Inbox] waits for (ErrOutOfOrder) until it comes. What a
// scheduled event says is due at a time, not after a given change: the
// inbox applies it whenever it arrives (deduplicated by id), and the
// key's other events neither wait for it nor it for them. Two scheduled
// messages of one key are not ordered between themselves. Consumers'
// per-key lanes still handle it one at a time with its key's other
// events, since its Key travels. A scheduled row that dies is listed by
// [Store.DeadRows] under its lane's key, with its Key in the
// "domainevents-outbox-key" header; re-driven, it is published at once.
// Message keys that start with "domainevents:at:" are refused. Until its
// time a scheduled row is a pending row that each full claim looks at and
// passes over, like a row backing off: many thousands of them waiting
// make every claim slower.
//
// # Inbox
//
// [Inbox.Handler] wraps a consumer's broker.Handler: in one transaction it
// inserts (consumer, event id), skips a duplicate, runs the handler with the
// transaction in ctx ([TxFrom]) and commits before acknowledging, so that
// the handler's database side effects happen once per event id however
// often the broker redelivers.
//
// It also keeps each key's commit order: with the sequence number the relay
// sends (broker.HeaderSeq, Delivery.Seq), it applies a key's event n only
// after n-1, tracking the last applied number per (consumer, key) in the
// inbox-keys table, in the same transaction. An event that arrives ahead of
// a gap is refused with an error matching [ErrOutOfOrder], which the
// subscriber retries with backoff while holding the key; a gap that never
// fills (its event was dead-lettered) blocks the key, listed by
// [Inbox.Blocked] and logged, until the missing event is re-driven or
// given up with [Inbox.Skip]. Several consumer processes on one queue keep
// the order too: each refuses what the others have not applied yet.
//
// # Dialects and schema
//
// [Postgres], [MySQL] (MariaDB >= 10.6, MySQL >= 8.0) and [SQLite]
// (>= 3.42; one relay does the work at a time, since SQLite has one write
// lock). [Store.Migrate] creates the tables, and adds the deliver_at
// column to an outbox table made before it existed; [DDL] returns the
// same script for your migration tool, and [SchemaFiles] holds it with the
// default table names (an older outbox table needs "ALTER TABLE
// domainevents_outbox ADD COLUMN deliver_at TIMESTAMPTZ", DATETIME(6)
// NULL on MySQL, INTEGER on SQLite, before a release with scheduled
// events runs). Table names are set with [WithTables]. The library needs no
// driver: open the *sql.DB with pgx's stdlib, go-sql-driver/mysql,
// modernc.org/sqlite or any other. With SQLite, open it with a busy timeout
// and immediate transactions (modernc: ?_pragma=busy_timeout(5000)&_txlock=immediate).
//
// # Errors
//
// Bad arguments and options match broker.ErrInvalid and name what is
// wrong. Database failures read "outbox: database: <operation>: <the
// driver's error>" and match [ErrDatabase] (and broker.ErrUnavailable:
// the transaction may succeed when tried again); errors.As reaches the
// driver's error. They never read as the broker's, and never carry the
// DSN. Context errors are returned as they are.
//
// # Shutdown
//
// Close the subscribers and stop writing, then [Relay.Close] (it lets the
// publishes in flight finish, marks them and gives up its leases), then the
// Broker, then the *sql.DB. [Store.Close] only stops accepting.
package outbox
