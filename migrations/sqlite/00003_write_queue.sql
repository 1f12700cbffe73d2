-- The durable write queue (fallback.WithWriteQueue): writes kept while
-- PostgreSQL could not take them, in the file that holds the cache entries
-- they change, so one transaction stores both and a restart keeps them.
--
-- pending on a cache entry: 0 = PostgreSQL's row (or a write-through of
-- it); 1 = the state a queued write will give it; 2 = a vendor a queued
-- write deletes (kept as a tombstone so that reads answer "not found" and
-- nothing re-caches it before the delete is replayed). Write-through,
-- eviction and cleanup leave pending entries alone; only the queue's own
-- operations change them.

-- +goose Up
ALTER TABLE cached_vendors ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cached_work_items ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS queued_writes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- queue order
    id           TEXT NOT NULL UNIQUE,              -- the write's ID: what makes replay exactly-once
    op           TEXT NOT NULL,
    entity       TEXT NOT NULL,
    key          TEXT NOT NULL,
    base_version INTEGER NOT NULL DEFAULT 0,
    encoding     INTEGER NOT NULL,
    data         BLOB NOT NULL,                     -- the entity as the caller wrote it
    queued_at    REAL NOT NULL,
    sent_at      REAL,                              -- first handed to PostgreSQL by a replay
    attempts     INTEGER NOT NULL DEFAULT 0,
    err          TEXT NOT NULL DEFAULT '',
    dead         INTEGER NOT NULL DEFAULT 0,        -- 1: a dead letter, kept for an operator
    dead_at      REAL,
    current_enc  INTEGER,                           -- PostgreSQL's row when it was dead-lettered
    current      BLOB
);
CREATE INDEX IF NOT EXISTS idx_queued_writes_key ON queued_writes (entity, key, dead, seq);
CREATE INDEX IF NOT EXISTS idx_queued_writes_dead ON queued_writes (dead, seq);
CREATE INDEX IF NOT EXISTS idx_queued_writes_age ON queued_writes (dead, queued_at);

-- +goose Down
DROP INDEX IF EXISTS idx_queued_writes_age;
DROP INDEX IF EXISTS idx_queued_writes_dead;
DROP INDEX IF EXISTS idx_queued_writes_key;
DROP TABLE IF EXISTS queued_writes;
ALTER TABLE cached_work_items DROP COLUMN pending;
ALTER TABLE cached_vendors DROP COLUMN pending;
