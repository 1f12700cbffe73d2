-- +goose Up
-- Vendors, keyed by name. The CHECK constraints mirror repository.Vendor.Validate
-- so that a writer which bypasses the Go validation still cannot store
-- what the library would refuse.
CREATE TABLE vendors (
    id                uuid        PRIMARY KEY,
    name              text        COLLATE "C" NOT NULL, -- byte order, as the cache and Go sort it
    status            text        NOT NULL,
    version           bigint      NOT NULL DEFAULT 1,
    extractor_version text        NOT NULL DEFAULT '',
    metadata          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text        NOT NULL DEFAULT '',
    CONSTRAINT vendors_name_check CHECK (
        char_length(name) BETWEEN 1 AND 100 AND name ~ '^[a-z0-9][a-z0-9_.-]*$'),
    CONSTRAINT vendors_status_check CHECK (status IN ('operational', 'broken')),
    CONSTRAINT vendors_version_check CHECK (version >= 1),
    CONSTRAINT vendors_extractor_version_check CHECK (
        extractor_version = '' OR extractor_version ~ '^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-+].*)?$'),
    CONSTRAINT vendors_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT vendors_created_by_check CHECK (char_length(created_by) <= 100)
);

CREATE UNIQUE INDEX vendors_name_key ON vendors (name);
-- List with a status filter walks this index in name order.
CREATE INDEX vendors_status_name_idx ON vendors (status, name);

-- +goose Down
DROP TABLE vendors;
