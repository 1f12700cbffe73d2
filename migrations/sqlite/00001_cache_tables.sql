-- The original cache layout, created only where it does not exist yet so a
-- cache file written by the original implementation is adopted, not replaced.

-- +goose Up
CREATE TABLE IF NOT EXISTS cached_vendors (
    name      TEXT PRIMARY KEY,
    data      BLOB NOT NULL,
    cached_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_cached_vendors_cached_at ON cached_vendors (cached_at);

CREATE TABLE IF NOT EXISTS cached_work_items (
    id        TEXT PRIMARY KEY,
    data      BLOB NOT NULL,
    cached_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_cached_work_items_cached_at ON cached_work_items (cached_at);

CREATE TABLE IF NOT EXISTS cache_metadata (
    key        TEXT PRIMARY KEY,
    value      TEXT,
    updated_at REAL
);

-- +goose Down
DROP TABLE IF EXISTS cache_metadata;
DROP TABLE IF EXISTS cached_work_items;
DROP TABLE IF EXISTS cached_vendors;
