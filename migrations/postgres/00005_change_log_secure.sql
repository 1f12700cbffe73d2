-- The change log, second form: writers no longer notify, the trigger
-- functions resolve nothing through a caller's search path, and the log
-- has an identity that a reset changes.
--
-- 1. No pg_notify in a writer's transaction. A transaction that has issued
--    NOTIFY takes a lock on the whole instance at commit (async.c,
--    PreCommit_Notify), so that notifications queue in commit order: every
--    writer, ours or another service's, then commits one at a time and
--    group commit is lost. Followers are woken instead by one elected
--    waker per database (pgstore.WatchChanges), which polls the log head
--    and sends one NOTIFY per batch of commits.
--
-- 2. Closed to forgery. The functions are SECURITY DEFINER, so whatever
--    they resolve by name runs with the owner's rights. With
--    "SET search_path FROM CURRENT" (migration 00003) the stored path was
--    "$user", public: pg_temp, not listed, is searched first, so a writer
--    with a temporary table named pgfallback_changes received the log rows
--    (hiding its writes from every follower), and a trigger on that table
--    ran as the owner. Now every name is qualified with the schema the
--    migration runs in, and the path is pg_catalog, <schema>, pg_temp:
--    pg_temp last, where it can shadow nothing. EXECUTE is revoked from
--    PUBLIC, so no one can attach these functions to a table of their own
--    to write log rows (firing a trigger checks no privilege: writers of
--    vendors and work_items need none on the functions or the log).
--
-- 3. The log is UNLOGGED. Its rows doubled the WAL of a one-row update
--    (about 250 to 500 bytes), and with durable commits the WAL flush is
--    what writers wait on: measured with pgbench, fsync on, 8 to 64
--    writers, the log row's WAL cost more than its CPU (see the README's
--    performance section). An unlogged table writes no WAL; in exchange a
--    crash empties it, and it is not replicated. Both are what a follower
--    already handles: the log is a record of recent changes, not data, and
--    a follower that cannot trust it resyncs authoritatively. A clean
--    shutdown keeps it.
--
-- 4. log_id names this log. pgfallback_change_log is unlogged too, so a
--    crash empties both together: its row, and with it the log_id, is
--    gone, and every cursor (which carries the log_id) expires, even once
--    the restarted identity sequence reaches the cursor's seq again. So
--    does a cursor on a log that was dropped and re-created. With the
--    timeline in the cursor, a promoted standby (whose unlogged tables
--    start empty) expires them as well.

-- +goose Up
ALTER TABLE pgfallback_change_log ADD COLUMN log_id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE pgfallback_changes SET UNLOGGED;
ALTER TABLE pgfallback_change_log SET UNLOGGED;

-- +goose StatementBegin
DO $migration$
DECLARE
    s text := current_schema();
BEGIN
    IF s IS NULL THEN
        RAISE EXCEPTION 'pgfallback: no schema in search_path to install the change log functions in';
    END IF;

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.pgfallback_log_vendor() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, %1$I, pg_temp AS $body$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.name OPERATOR(pg_catalog.=) OLD.name AND NEW.id OPERATOR(pg_catalog.=) OLD.id THEN
            INSERT INTO %1$I.pgfallback_changes (entity, key, op, version)
            VALUES ('vendor', NEW.name, 'update', NEW.version);
        ELSE
            INSERT INTO %1$I.pgfallback_changes (entity, key, op, version)
            VALUES ('vendor', OLD.name, 'delete', OLD.version), ('vendor', NEW.name, 'insert', NEW.version);
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO %1$I.pgfallback_changes (entity, key, op, version)
        VALUES ('vendor', NEW.name, 'insert', NEW.version);
    ELSE
        INSERT INTO %1$I.pgfallback_changes (entity, key, op, version)
        VALUES ('vendor', OLD.name, 'delete', OLD.version);
    END IF;
    RETURN NULL;
END
$body$$f$, s);

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.pgfallback_log_work_item() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, %1$I, pg_temp AS $body$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.id OPERATOR(pg_catalog.=) OLD.id THEN
            INSERT INTO %1$I.pgfallback_changes (entity, key, op, version)
            VALUES ('work_item', NEW.id::pg_catalog.text, 'update', NEW.version);
        ELSE
            INSERT INTO %1$I.pgfallback_changes (entity, key, op, version)
            VALUES ('work_item', OLD.id::pg_catalog.text, 'delete', OLD.version),
                   ('work_item', NEW.id::pg_catalog.text, 'insert', NEW.version);
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO %1$I.pgfallback_changes (entity, key, op, version)
        VALUES ('work_item', NEW.id::pg_catalog.text, 'insert', NEW.version);
    ELSE
        INSERT INTO %1$I.pgfallback_changes (entity, key, op, version)
        VALUES ('work_item', OLD.id::pg_catalog.text, 'delete', OLD.version);
    END IF;
    RETURN NULL;
END
$body$$f$, s);

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.pgfallback_log_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, %1$I, pg_temp AS $body$
BEGIN
    INSERT INTO %1$I.pgfallback_changes (entity, key, op, version) VALUES (TG_ARGV[0], '', 'truncate', 0);
    RETURN NULL;
END
$body$$f$, s);

    EXECUTE format('REVOKE ALL ON FUNCTION %1$I.pgfallback_log_vendor() FROM PUBLIC', s);
    EXECUTE format('REVOKE ALL ON FUNCTION %1$I.pgfallback_log_work_item() FROM PUBLIC', s);
    EXECUTE format('REVOKE ALL ON FUNCTION %1$I.pgfallback_log_truncate() FROM PUBLIC', s);
END
$migration$;
-- +goose StatementEnd

-- +goose Down
-- Back to migration 00003's functions (notifying, FROM CURRENT).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION pgfallback_log_vendor() RETURNS trigger
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
CREATE OR REPLACE FUNCTION pgfallback_log_work_item() RETURNS trigger
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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION pgfallback_log_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO pgfallback_changes (entity, key, op, version) VALUES (TG_ARGV[0], '', 'truncate', 0);
    PERFORM pg_notify('pgfallback_changes', TG_ARGV[0]);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

GRANT EXECUTE ON FUNCTION pgfallback_log_vendor(), pgfallback_log_work_item(), pgfallback_log_truncate() TO PUBLIC;
ALTER TABLE pgfallback_change_log SET LOGGED;
ALTER TABLE pgfallback_changes SET LOGGED;
ALTER TABLE pgfallback_change_log DROP COLUMN log_id;
