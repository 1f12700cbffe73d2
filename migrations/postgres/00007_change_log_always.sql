-- The change log's triggers fire for every writer, replication included.
--
-- A trigger fires by default only in sessions whose session_replication_role
-- is "origin". Logical replication's apply workers run as "replica", and so
-- do the sessions of tools that load data with it (pglogical, some ETL and
-- restore tools): every change they wrote to vendors or work_items reached
-- the table and never the log, so a follower of this database kept serving
-- its cached rows as current. Measured: a subscription replicating vendors
-- into a migrated database left its log empty after an insert and an
-- update. ENABLE ALWAYS makes the triggers fire whatever the role.
--
-- A reader of the log checks that the four triggers are enabled ALWAYS and
-- have not been altered since its cursor was read (pgstore/triggers.go,
-- "The log's triggers"): a trigger disabled, dropped, or put back to
-- ENABLE (as "ALTER TABLE ... ENABLE TRIGGER ALL" does after a bulk load)
-- stops the feed with an error naming the statement that repairs it, and
-- every cursor read before the change expires.
--
-- The lock it takes (SHARE ROW EXCLUSIVE on each table) waits for writers
-- and would hold up new ones while it waits: lock_timeout fails the
-- migration instead, after 5 s; run it again.

-- +goose Up
SET LOCAL lock_timeout = '5s';
ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change;
ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_truncate;
ALTER TABLE work_items ENABLE ALWAYS TRIGGER pgfallback_work_items_change;
ALTER TABLE work_items ENABLE ALWAYS TRIGGER pgfallback_work_items_truncate;

-- +goose Down
SET LOCAL lock_timeout = '5s';
ALTER TABLE vendors ENABLE TRIGGER pgfallback_vendors_change;
ALTER TABLE vendors ENABLE TRIGGER pgfallback_vendors_truncate;
ALTER TABLE work_items ENABLE TRIGGER pgfallback_work_items_change;
ALTER TABLE work_items ENABLE TRIGGER pgfallback_work_items_truncate;
