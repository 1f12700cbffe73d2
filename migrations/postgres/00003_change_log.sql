-- The change log: triggers on vendors and work_items record every committed
-- insert, update, delete and truncate, whoever the writer (this library,
-- another service, psql, a data migration), so that caches can follow them
-- (repository.ChangeFeed, implemented by pgstore).
--
-- seq orders the log, but sequence values are taken at write time and
-- transactions commit in any order: a reader cannot treat "seq > the last
-- seq I saw" as "new". xid (the writing transaction) lets it ask instead
-- "which rows were not yet committed in the snapshot of my last read".

-- +goose Up
CREATE TABLE pgfallback_changes (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    entity     text        NOT NULL,
    key        text        NOT NULL, -- vendors.name, or work_items.id as text; '' for a truncate
    op         text        NOT NULL,
    version    bigint      NOT NULL, -- after the change; before it for a delete; 0 for a truncate
    changed_at timestamptz NOT NULL DEFAULT statement_timestamp(),
    CONSTRAINT pgfallback_changes_entity_check CHECK (entity IN ('vendor', 'work_item')),
    CONSTRAINT pgfallback_changes_op_check CHECK (op IN ('insert', 'update', 'delete', 'truncate'))
);
-- A read looks for rows written by the transactions its cursor's snapshot
-- saw in progress.
CREATE INDEX pgfallback_changes_xid_idx ON pgfallback_changes (xid);
-- No index on changed_at: every write would pay for a third index, and
-- pruning finds old rows by walking seq from the start.

-- What pruning removed, so that a reader whose cursor predates it is told
-- to resync instead of silently missing rows. One row; the values only grow.
CREATE TABLE pgfallback_change_log (
    id            boolean     PRIMARY KEY DEFAULT true,
    pruned_seq    bigint      NOT NULL DEFAULT 0,   -- the largest seq removed
    pruned_xid    xid8        NOT NULL DEFAULT '0', -- the largest writer xid removed
    pruned_before timestamptz,                      -- the latest age cutoff applied; NULL: never pruned
    CONSTRAINT pgfallback_change_log_one_row CHECK (id)
);
INSERT INTO pgfallback_change_log DEFAULT VALUES;

-- Row-level AFTER triggers. Statement-level triggers with transition tables
-- were measured too (see pgstore's BenchmarkUpdateTriggers): they cost a
-- one-row write, which is what this library makes, about twice as much (the
-- transition tuplestores, and a join of old to new rows to tell a rename
-- from an update), and the triggers must stay under 15 % of an update. They
-- are cheaper for bulk statements (a 20,000-row UPDATE: +30 % against
-- +150 % here), which are rare and best batched anyway.
--
-- A row whose key changed (a vendor renamed in SQL, an id changed) is logged
-- as a delete of the old key and then an insert of the new one. Rows are
-- logged in the order the statement changed them, and the unique indexes on
-- the keys are checked row by row (they are not deferrable), so each row's
-- delete-then-insert is valid where it stands: replaying the log in seq
-- order never holds one key twice or drops one that exists.
--
-- SECURITY DEFINER with the search_path of this migration: a writer (another
-- service, another role) needs no privilege on the log and cannot forge its
-- rows, and its own search_path cannot redirect the insert elsewhere.
--
-- pg_notify carries only the entity: PostgreSQL folds identical
-- notifications of one transaction into one, delivered at commit, and a
-- listener reads the log anyway.

-- +goose StatementBegin
CREATE FUNCTION pgfallback_log_vendor() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.name = OLD.name AND NEW.id = OLD.id THEN
            INSERT INTO pgfallback_changes (entity, key, op, version)
            VALUES ('vendor', NEW.name, 'update', NEW.version);
        ELSE
            INSERT INTO pgfallback_changes (entity, key, op, version)
            VALUES ('vendor', OLD.name, 'delete', OLD.version), ('vendor', NEW.name, 'insert', NEW.version);
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO pgfallback_changes (entity, key, op, version)
        VALUES ('vendor', NEW.name, 'insert', NEW.version);
    ELSE
        INSERT INTO pgfallback_changes (entity, key, op, version)
        VALUES ('vendor', OLD.name, 'delete', OLD.version);
    END IF;
    PERFORM pg_notify('pgfallback_changes', 'vendor');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION pgfallback_log_work_item() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.id = OLD.id THEN
            INSERT INTO pgfallback_changes (entity, key, op, version)
            VALUES ('work_item', NEW.id::text, 'update', NEW.version);
        ELSE
            INSERT INTO pgfallback_changes (entity, key, op, version)
            VALUES ('work_item', OLD.id::text, 'delete', OLD.version), ('work_item', NEW.id::text, 'insert', NEW.version);
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO pgfallback_changes (entity, key, op, version)
        VALUES ('work_item', NEW.id::text, 'insert', NEW.version);
    ELSE
        INSERT INTO pgfallback_changes (entity, key, op, version)
        VALUES ('work_item', OLD.id::text, 'delete', OLD.version);
    END IF;
    PERFORM pg_notify('pgfallback_changes', 'work_item');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- TRUNCATE fires no row trigger. TG_ARGV[0] is the entity.
-- +goose StatementBegin
CREATE FUNCTION pgfallback_log_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO pgfallback_changes (entity, key, op, version) VALUES (TG_ARGV[0], '', 'truncate', 0);
    PERFORM pg_notify('pgfallback_changes', TG_ARGV[0]);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER pgfallback_vendors_change AFTER INSERT OR UPDATE OR DELETE ON vendors
    FOR EACH ROW EXECUTE FUNCTION pgfallback_log_vendor();
CREATE TRIGGER pgfallback_vendors_truncate AFTER TRUNCATE ON vendors
    FOR EACH STATEMENT EXECUTE FUNCTION pgfallback_log_truncate('vendor');
CREATE TRIGGER pgfallback_work_items_change AFTER INSERT OR UPDATE OR DELETE ON work_items
    FOR EACH ROW EXECUTE FUNCTION pgfallback_log_work_item();
CREATE TRIGGER pgfallback_work_items_truncate AFTER TRUNCATE ON work_items
    FOR EACH STATEMENT EXECUTE FUNCTION pgfallback_log_truncate('work_item');

-- +goose Down
DROP TRIGGER pgfallback_work_items_truncate ON work_items;
DROP TRIGGER pgfallback_work_items_change ON work_items;
DROP TRIGGER pgfallback_vendors_truncate ON vendors;
DROP TRIGGER pgfallback_vendors_change ON vendors;
DROP FUNCTION pgfallback_log_truncate();
DROP FUNCTION pgfallback_log_work_item();
DROP FUNCTION pgfallback_log_vendor();
DROP TABLE pgfallback_change_log;
DROP TABLE pgfallback_changes;
