-- A time-ordered random UUID (the layout of UUID version 7: 48 bits of Unix milliseconds, then
-- random bits): new jobs' uids land at the right edge of their index, as ids do. A plain SQL
-- function, so that the planner inlines it into the INSERT. (PostgreSQL 18's uuidv7() is not
-- on older servers.)
CREATE FUNCTION {schema}.uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- A job's identity that no other job ever has, even after a failover that hands out ids again.
ALTER TABLE {schema}.job ADD COLUMN uid uuid;
UPDATE {schema}.job SET uid = {schema}.uuid_v7() WHERE uid IS NULL;
ALTER TABLE {schema}.job ALTER COLUMN uid SET DEFAULT {schema}.uuid_v7(), ALTER COLUMN uid SET NOT NULL;
CREATE UNIQUE INDEX job_uid ON {schema}.job (uid);

-- Debounced jobs: at most one job per key that has not started yet; a later enqueue with the key
-- replaces its data and run time (INSERT ... ON CONFLICT DO UPDATE on this index).
ALTER TABLE {schema}.job ADD COLUMN debounce_key text;
CREATE UNIQUE INDEX job_debounce_key ON {schema}.job (debounce_key)
    WHERE debounce_key IS NOT NULL AND state = 'created';

-- Throttled enqueues (unique_for): one row per key, taken by the enqueue that made job_id and
-- held until expires_at, whatever becomes of the job. Upserted in the enqueue's transaction.
CREATE TABLE {schema}.job_key (
    key        text PRIMARY KEY,
    job_id     bigint NOT NULL,
    job_uid    uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX job_key_expires ON {schema}.job_key (expires_at);
