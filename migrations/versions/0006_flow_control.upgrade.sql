-- A job's concurrency key: its task's key_concurrency and key_rate_limit count per (type, key).
ALTER TABLE {schema}.job ADD COLUMN concurrency_key text;

-- Limits of a whole queue, across every worker: most jobs active at once, most starts per window.
ALTER TABLE {schema}.queue
    ADD COLUMN concurrency integer CHECK (concurrency >= 1),
    ADD COLUMN rate_limit integer CHECK (rate_limit >= 1),
    ADD COLUMN rate_window double precision CHECK (rate_window > 0),
    ADD CONSTRAINT queue_rate_complete CHECK ((rate_limit IS NULL) = (rate_window IS NULL));

-- Recent starts of rate-limited scopes (kind 'type', 'queue' or 'key'; name: the type or queue;
-- key: the concurrency key, '' for the others): n jobs started at once by one claim, on the
-- database's clock. Later claims delete the rows that have left every window.
CREATE TABLE {schema}.flow_start (
    kind text NOT NULL,
    name text NOT NULL,
    key  text NOT NULL DEFAULT '',
    at   timestamptz NOT NULL,
    n    integer NOT NULL DEFAULT 1
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01);
CREATE INDEX flow_start_scope ON {schema}.flow_start (kind, name, key, at);
COMMENT ON TABLE {schema}.flow_start IS 'Recent job starts of rate-limited types, queues and keys';

-- Fair tasks: the claim walks the distinct concurrency keys of a (queue, type) with waiting jobs
-- through this index, from the key after the one it served last (flow_cursor), round-robin.
CREATE INDEX job_fair ON {schema}.job (queue, type, concurrency_key, priority DESC, run_at, id)
    WHERE state < 'active' AND concurrency_key IS NOT NULL;
CREATE TABLE {schema}.flow_cursor (
    queue text NOT NULL,
    type  text NOT NULL,
    key   text NOT NULL,
    PRIMARY KEY (queue, type)
);
COMMENT ON TABLE {schema}.flow_cursor IS 'The concurrency key a fair task''s claims served last, per queue';
