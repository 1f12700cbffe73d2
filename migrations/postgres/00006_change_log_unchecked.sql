-- The change log without CHECK constraints: each one cost every writer.
--
-- PostgreSQL reads a table's CHECK constraints from their stored text and
-- plans them again on every execution of an INSERT, and the trigger's
-- INSERT is executed once per changed row. perf showed the two checks on
-- pgfallback_changes (entity, op) parsed and planned inside every write;
-- with pgbench, durable commits and one-row UPDATEs, dropping them raised
-- writers from 66-68 % to 72-74 % of their speed without triggers at 32
-- concurrent writers, and from 57-61 % to 59-67 % at 64 (docs/feed.md).
--
-- They guarded nothing a role could reach: only the trigger functions of
-- migration 00005 write the log (SECURITY DEFINER, EXECUTE revoked from
-- PUBLIC; no role is granted INSERT), with constant entities and ops. An
-- owner who inserts other values by hand is not refused; a reader copes:
-- a change of an unknown entity is ignored, an unknown op of a known
-- entity re-reads the key like an update, and neither is broadcast.
--
-- DROP CONSTRAINT is a catalog change, but it takes an ACCESS EXCLUSIVE
-- lock on the log, which every writer's trigger inserts into: queued
-- behind a long transaction that wrote a vendor, it would hold up every
-- new writer until that transaction ends. lock_timeout fails the
-- migration instead, after 5 s; run it again.

-- +goose Up
SET LOCAL lock_timeout = '5s';
-- IF EXISTS: a database where someone dropped them by hand migrates too.
ALTER TABLE pgfallback_changes
    DROP CONSTRAINT IF EXISTS pgfallback_changes_entity_check,
    DROP CONSTRAINT IF EXISTS pgfallback_changes_op_check;

-- +goose Down
SET LOCAL lock_timeout = '5s';
ALTER TABLE pgfallback_changes
    ADD CONSTRAINT pgfallback_changes_entity_check CHECK (entity IN ('vendor', 'work_item')),
    ADD CONSTRAINT pgfallback_changes_op_check CHECK (op IN ('insert', 'update', 'delete', 'truncate'));
