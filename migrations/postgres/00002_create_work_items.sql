-- +goose Up
-- Work items form a tree of at most 6 levels (depth 0-5). path holds the
-- ancestor ids from the root, '/'-separated, so a subtree is one prefix scan.
CREATE TABLE work_items (
    id          uuid        PRIMARY KEY,
    version     bigint      NOT NULL DEFAULT 1,
    type        text        NOT NULL,
    title       text        NOT NULL,
    status      text        NOT NULL,
    parent_id   uuid        REFERENCES work_items (id),
    path        text        NOT NULL DEFAULT '',
    depth       integer     NOT NULL DEFAULT 0,
    branch_name text        NOT NULL DEFAULT '',
    commit_hash text        NOT NULL DEFAULT '',
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    created_by  text        NOT NULL DEFAULT '',
    CONSTRAINT work_items_version_check CHECK (version >= 1),
    CONSTRAINT work_items_type_check CHECK (type IN ('project', 'session', 'task', 'research')),
    CONSTRAINT work_items_title_check CHECK (char_length(title) BETWEEN 1 AND 200 AND btrim(title) <> ''),
    CONSTRAINT work_items_status_check CHECK (status IN ('active', 'completed', 'blocked')),
    CONSTRAINT work_items_depth_check CHECK (depth BETWEEN 0 AND 5),
    CONSTRAINT work_items_parent_check CHECK (parent_id IS DISTINCT FROM id),
    CONSTRAINT work_items_root_check CHECK ((parent_id IS NULL) = (depth = 0) AND (parent_id IS NULL) = (path = '')),
    CONSTRAINT work_items_branch_name_check CHECK (char_length(branch_name) <= 255),
    CONSTRAINT work_items_commit_hash_check CHECK (commit_hash = '' OR commit_hash ~ '^[0-9a-f]{40}$'),
    CONSTRAINT work_items_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT work_items_created_by_check CHECK (char_length(created_by) <= 100)
);

-- List orders by (created_at, id); the partial index serves the default
-- filter (live items), the others the type/status/parent filters.
CREATE INDEX work_items_live_order_idx ON work_items (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX work_items_order_idx ON work_items (created_at, id);
CREATE INDEX work_items_parent_idx ON work_items (parent_id, created_at, id);
CREATE INDEX work_items_type_status_idx ON work_items (type, status, created_at, id);
CREATE INDEX work_items_status_idx ON work_items (status, created_at, id);
-- Subtree moves and deletes scan by path prefix.
CREATE INDEX work_items_path_idx ON work_items (path text_pattern_ops);

-- +goose Down
DROP TABLE work_items;
