-- Applied writes: the ID of every write applied through pgstore's
-- ApplyWrite (repository.WriteApplier), recorded in the transaction that
-- applies it. A write replayed from the fallback layer's durable queue after
-- a crash, a kill or a lost reply finds its ID here and is not applied twice.
--
-- entity, key and op say what the ID did: a replay reads the row back by the
-- recorded key (a work item created without an ID got one when applied), and
-- an ID reused for another write is refused rather than taken as done.
--
-- No change log triggers: these rows are bookkeeping, not entities that a
-- cache follows.

-- +goose Up
CREATE TABLE pgfallback_applied_writes (
    id         uuid        PRIMARY KEY,
    entity     text        NOT NULL,
    key        text        NOT NULL, -- vendors.name, or work_items.id as text
    op         text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pgfallback_applied_writes_entity_check CHECK (entity IN ('vendor', 'work_item')),
    CONSTRAINT pgfallback_applied_writes_op_check CHECK (op IN ('create', 'update', 'delete'))
);
-- Pruning removes the oldest records first, a batch at a time.
CREATE INDEX pgfallback_applied_writes_applied_at_idx ON pgfallback_applied_writes (applied_at);

-- +goose Down
DROP TABLE pgfallback_applied_writes;
