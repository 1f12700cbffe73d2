-- Columns for version-monotonic writes, the stored encoding, the fields
-- that List filters and orders by (so listing does not decode every entry),
-- and rev: a random tag every write renews, which lets a process keep a
-- decoded copy of an entry and know, from one small read, that no process
-- has rewritten the row since (NULL for legacy rows: never memoized).
--
-- Rows written by the original implementation hold JSON (encoding 0). Their
-- columns are backfilled from that JSON where it parses; a row whose JSON does
-- not parse keeps the defaults and is reported as a corrupt entry (a miss) on
-- read, never as a failure of the cache.

-- +goose Up
ALTER TABLE cached_vendors ADD COLUMN version    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cached_vendors ADD COLUMN encoding   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cached_vendors ADD COLUMN id         TEXT;
ALTER TABLE cached_vendors ADD COLUMN status     TEXT NOT NULL DEFAULT '';
ALTER TABLE cached_vendors ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cached_vendors ADD COLUMN rev        INTEGER;

UPDATE cached_vendors SET
    version = COALESCE(json_extract(data, '$.version'), 0),
    id      = json_extract(data, '$.id'),
    status  = COALESCE(json_extract(data, '$.status'), ''),
    created_at = COALESCE(CAST(unixepoch(json_extract(data, '$.created_at'), 'subsec') * 1000000000 AS INTEGER), 0)
WHERE json_valid(data);

CREATE INDEX IF NOT EXISTS idx_cached_vendors_id ON cached_vendors (id);

ALTER TABLE cached_work_items ADD COLUMN version    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cached_work_items ADD COLUMN encoding   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cached_work_items ADD COLUMN type       TEXT NOT NULL DEFAULT '';
ALTER TABLE cached_work_items ADD COLUMN status     TEXT NOT NULL DEFAULT '';
ALTER TABLE cached_work_items ADD COLUMN parent_id  TEXT;
ALTER TABLE cached_work_items ADD COLUMN path       TEXT NOT NULL DEFAULT '';
ALTER TABLE cached_work_items ADD COLUMN deleted    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cached_work_items ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cached_work_items ADD COLUMN rev        INTEGER;

UPDATE cached_work_items SET
    version   = COALESCE(json_extract(data, '$.version'), 0),
    type      = COALESCE(json_extract(data, '$.type'), ''),
    status    = COALESCE(json_extract(data, '$.status'), ''),
    parent_id = json_extract(data, '$.parent_id'),
    path      = COALESCE(json_extract(data, '$.path'), ''),
    deleted   = json_extract(data, '$.deleted_at') IS NOT NULL,
    created_at = COALESCE(CAST(unixepoch(json_extract(data, '$.created_at'), 'subsec') * 1000000000 AS INTEGER), 0)
WHERE json_valid(data);

CREATE INDEX IF NOT EXISTS idx_cached_work_items_created ON cached_work_items (created_at, id);
CREATE INDEX IF NOT EXISTS idx_cached_work_items_parent ON cached_work_items (parent_id);
CREATE INDEX IF NOT EXISTS idx_cached_work_items_path ON cached_work_items (path);

-- +goose Down
DROP INDEX IF EXISTS idx_cached_work_items_path;
DROP INDEX IF EXISTS idx_cached_work_items_parent;
DROP INDEX IF EXISTS idx_cached_work_items_created;
DROP INDEX IF EXISTS idx_cached_vendors_id;
ALTER TABLE cached_work_items DROP COLUMN rev;
ALTER TABLE cached_work_items DROP COLUMN created_at;
ALTER TABLE cached_work_items DROP COLUMN deleted;
ALTER TABLE cached_work_items DROP COLUMN path;
ALTER TABLE cached_work_items DROP COLUMN parent_id;
ALTER TABLE cached_work_items DROP COLUMN status;
ALTER TABLE cached_work_items DROP COLUMN type;
ALTER TABLE cached_work_items DROP COLUMN encoding;
ALTER TABLE cached_work_items DROP COLUMN version;
ALTER TABLE cached_vendors DROP COLUMN rev;
ALTER TABLE cached_vendors DROP COLUMN created_at;
ALTER TABLE cached_vendors DROP COLUMN status;
ALTER TABLE cached_vendors DROP COLUMN id;
ALTER TABLE cached_vendors DROP COLUMN encoding;
ALTER TABLE cached_vendors DROP COLUMN version;
