-- Schema of github.com/domainevents/domainevents/outbox for mysql, default table names.
-- outbox.DDL returns it for other names; Store.Migrate runs it. Idempotent.
-- Tables made before scheduled events (Store.Migrate adds it itself):
--   ALTER TABLE domainevents_outbox ADD COLUMN deliver_at DATETIME(6) NULL;

CREATE TABLE IF NOT EXISTS domainevents_outbox (
    id              VARCHAR(255) NOT NULL,              -- event id, the consumers' idempotency key
    name            VARCHAR(255) NOT NULL,              -- event name: routing key / header
    msg_key         VARCHAR(255) NOT NULL,              -- aggregate id: order is kept per key
    seq             BIGINT       NOT NULL,              -- per-key sequence: 1, 2, 3... in commit order
    body            LONGBLOB     NOT NULL,
    content_type    VARCHAR(255) NOT NULL DEFAULT '',
    headers         TEXT         NULL,                  -- JSON object of string headers (trace context)
    occurred_at     DATETIME(6)  NOT NULL,              -- the message's Time, UTC
    created_at      DATETIME(6)  NOT NULL,              -- UTC, as every time below
    state           SMALLINT     NOT NULL DEFAULT 0,    -- 0 pending, 1 published, 2 dead
    attempts        INT          NOT NULL DEFAULT 0,    -- claims so far
    next_attempt_at DATETIME(6)  NOT NULL,
    lease_owner     VARCHAR(64)  NULL,                  -- relay holding the row
    lease_until     DATETIME(6)  NULL,
    published_at    DATETIME(6)  NULL,
    dead_at         DATETIME(6)  NULL,
    last_error      TEXT         NULL,
    deliver_at      DATETIME(6)  NULL,                  -- WithDeliverAt: not published before; NULL: at once
    PRIMARY KEY (id),
    UNIQUE KEY domainevents_outbox_key_seq (msg_key, seq),
    KEY domainevents_outbox_due (state, next_attempt_at),
    KEY domainevents_outbox_head (state, msg_key, seq),
    KEY domainevents_outbox_published (state, published_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS domainevents_outbox_keys (
    msg_key  VARCHAR(255) NOT NULL PRIMARY KEY,
    last_seq BIGINT       NOT NULL                      -- seq of the key's last stored message
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS domainevents_inbox (
    consumer     VARCHAR(255) NOT NULL,
    event_id     VARCHAR(255) NOT NULL,
    processed_at DATETIME(6)  NOT NULL,                 -- UTC
    PRIMARY KEY (consumer, event_id),
    KEY domainevents_inbox_processed (processed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS domainevents_inbox_keys (
    consumer   VARCHAR(255) NOT NULL,
    msg_key    VARCHAR(255) NOT NULL,
    last_seq   BIGINT       NOT NULL,                   -- seq of the key's last event applied (or skipped)
    updated_at DATETIME(6)  NOT NULL,                   -- UTC
    PRIMARY KEY (consumer, msg_key),
    KEY domainevents_inbox_keys_updated (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
