-- Schema of github.com/domainevents/domainevents/outbox for sqlite, default table names.
-- outbox.DDL returns it for other names; Store.Migrate runs it. Idempotent.
-- Tables made before scheduled events (Store.Migrate adds it itself):
--   ALTER TABLE domainevents_outbox ADD COLUMN deliver_at INTEGER;

CREATE TABLE IF NOT EXISTS domainevents_outbox (
    id              TEXT    NOT NULL PRIMARY KEY,       -- event id, the consumers' idempotency key
    name            TEXT    NOT NULL,                   -- event name: routing key / header
    msg_key         TEXT    NOT NULL,                   -- aggregate id: order is kept per key
    seq             INTEGER NOT NULL,                   -- per-key sequence: 1, 2, 3... in commit order
    body            BLOB    NOT NULL,
    content_type    TEXT    NOT NULL DEFAULT '',
    headers         TEXT,                               -- JSON object of string headers (trace context)
    occurred_at     INTEGER NOT NULL,                   -- the message's Time; all times: unix microseconds
    created_at      INTEGER NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0,         -- 0 pending, 1 published, 2 dead
    attempts        INTEGER NOT NULL DEFAULT 0,         -- claims so far
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,                               -- relay holding the row
    lease_until     INTEGER,
    published_at    INTEGER,
    dead_at         INTEGER,
    last_error      TEXT,
    deliver_at      INTEGER,                            -- WithDeliverAt: not published before; NULL: at once
    UNIQUE (msg_key, seq)
);

CREATE INDEX IF NOT EXISTS domainevents_outbox_due ON domainevents_outbox (next_attempt_at) WHERE state = 0;

CREATE INDEX IF NOT EXISTS domainevents_outbox_head ON domainevents_outbox (msg_key, seq) WHERE state = 0;

CREATE INDEX IF NOT EXISTS domainevents_outbox_published ON domainevents_outbox (published_at) WHERE state = 1;

CREATE TABLE IF NOT EXISTS domainevents_outbox_keys (
    msg_key  TEXT    NOT NULL PRIMARY KEY,
    last_seq INTEGER NOT NULL                           -- seq of the key's last stored message
);

CREATE TABLE IF NOT EXISTS domainevents_inbox (
    consumer     TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    processed_at INTEGER NOT NULL,                      -- unix microseconds
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX IF NOT EXISTS domainevents_inbox_processed ON domainevents_inbox (processed_at);

CREATE TABLE IF NOT EXISTS domainevents_inbox_keys (
    consumer   TEXT    NOT NULL,
    msg_key    TEXT    NOT NULL,
    last_seq   INTEGER NOT NULL,                        -- seq of the key's last event applied (or skipped)
    updated_at INTEGER NOT NULL,                        -- unix microseconds
    PRIMARY KEY (consumer, msg_key)
);

CREATE INDEX IF NOT EXISTS domainevents_inbox_keys_updated ON domainevents_inbox_keys (updated_at);
