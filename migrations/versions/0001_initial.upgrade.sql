CREATE TYPE {schema}.job_state AS ENUM ('created', 'retry', 'active', 'completed', 'cancelled', 'failed');

CREATE TABLE {schema}.job (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type             text NOT NULL,
    queue            text NOT NULL,
    data             jsonb NOT NULL,
    state            {schema}.job_state NOT NULL DEFAULT 'created',
    priority         integer NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    duration         double precision,
    retry_delay      double precision,
    retry_backoff    boolean,
    retry_delay_max  double precision,
    timeout          double precision,
    lease_id         uuid,
    lease_expires_at timestamptz,
    worker_id        text,
    output           jsonb,
    error            text,
    errors           jsonb,
    unique_key       text,
    trace            jsonb
) WITH (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim walks this index in its own order, per queue: only waiting rows are in it.
CREATE INDEX job_fetch ON {schema}.job (queue, priority DESC, run_at, id) WHERE state < 'active';
-- Rescue finds expired leases without reading finished rows.
CREATE INDEX job_lease ON {schema}.job (lease_expires_at) WHERE state = 'active';
-- Pruning finds old finished rows.
CREATE INDEX job_finished ON {schema}.job (finished_at) WHERE state > 'active';
-- At most one waiting or running job per unique key.
CREATE UNIQUE INDEX job_unique_key ON {schema}.job (unique_key)
    WHERE unique_key IS NOT NULL AND state < 'completed';

CREATE TABLE {schema}.worker (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    concurrency  integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
