-- Every statement pgqueue runs, one named block each. A block may name another in braces,
-- {claim_candidates} say, to take its text in: one text for what two statements share.
-- {schema} is bound once, as a quoted identifier; every value is a bound parameter.
-- All time maths use the database's now(), never a worker's clock.

-- name: schema_version_table
-- Whether the schema's version table exists. Read from the catalog, so that a missing
-- schema never raises an error (which would abort the caller's transaction).
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_tables
    WHERE schemaname = %(schema)s AND tablename = {version_table_name}
) AS present;

-- name: schema_version
-- The alembic revision the schema is at.
SELECT version_num FROM {schema}.{version_table};

-- name: new_id_uid
-- A part of the inserting statements, not a statement: a new job's id and its uid, for the
-- columns (id, uid) of an INSERT with OVERRIDING SYSTEM VALUE. A row's values are computed in
-- the order of its columns, so currval() reads the id just drawn for the same row, row by row
-- in an INSERT ... SELECT as well. An insert that gives the uid never calls the table's
-- job_uid trigger (a PL/pgSQL call per row: ~7 µs of the ~115 µs of server time a one-job
-- insert takes, ~13 % of an insert of 50); the trigger is left for inserts that give neither
-- (by hand, by a trigger function, or by an earlier pgqueue).
nextval('{schema}.job_id_seq'), {schema}.job_uid(currval('{schema}.job_id_seq'))

-- name: insert_job
-- Insert one job without a unique key: the common enqueue, one plain INSERT. (A job without
-- a key can never conflict, and ON CONFLICT would cost a speculative insertion anyway.)
-- Positional, in this order: data, type, queue, priority, max_attempts, run_at, delay,
-- retry_delay, retry_backoff, retry_delay_max, timeout.
INSERT INTO {schema}.job (id, uid, data, type, queue, priority, max_attempts, run_at,
                          retry_delay, retry_backoff, retry_delay_max, timeout)
OVERRIDING SYSTEM VALUE
VALUES ({new_id_uid}, %s::jsonb, %s, %s, %s, %s,
        coalesce(%s::timestamptz, now() + make_interval(secs => coalesce(%s::float8, 0))),
        %s, %s, %s, %s)
RETURNING id, uid;

-- name: insert_job_notify
-- insert_job, and wake the job's queue on commit: for enqueues in the caller's transaction.
-- Positional, as insert_job, then the channel.
WITH inserted AS (
    INSERT INTO {schema}.job (id, uid, data, type, queue, priority, max_attempts, run_at,
                              retry_delay, retry_backoff, retry_delay_max, timeout)
    OVERRIDING SYSTEM VALUE
    VALUES ({new_id_uid}, %s::jsonb, %s, %s, %s, %s,
            coalesce(%s::timestamptz, now() + make_interval(secs => coalesce(%s::float8, 0))),
            %s, %s, %s, %s)
    RETURNING id, uid, queue
)
SELECT id, uid, pg_notify(%s, queue) FROM inserted;

-- name: insert_unique_job
-- Insert one job with a unique key and, with %(notify)s, wake its queue's workers on commit.
-- Skipped (no row) when its unique_key matches a job that still waits or runs.
WITH inserted AS (
    INSERT INTO {schema}.job (id, uid, type, queue, data, priority, max_attempts, run_at,
                              retry_delay, retry_backoff, retry_delay_max, timeout, unique_key)
    OVERRIDING SYSTEM VALUE
    VALUES ({new_id_uid}, %(type)s, %(queue)s, %(data)s::jsonb, %(priority)s, %(max_attempts)s,
            coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s::float8, 0))),
            %(retry_delay)s, %(retry_backoff)s, %(retry_delay_max)s, %(timeout)s, %(unique_key)s)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state < 'completed' DO NOTHING
    RETURNING id, uid, queue
)
SELECT id, uid, (SELECT count(pg_notify(%(channel)s, queue)) FROM inserted WHERE %(notify)s) AS woken
FROM inserted;

-- name: insert_job_traced
-- Insert one job with the trace context of its enqueue (%(trace)s, W3C headers as JSON) and,
-- with %(notify)s, wake its queue's workers on commit. Used only when tracing is on. Skipped
-- (no row) when its unique_key matches a job that still waits or runs.
WITH inserted AS (
    INSERT INTO {schema}.job (id, uid, type, queue, data, priority, max_attempts, run_at,
                              retry_delay, retry_backoff, retry_delay_max, timeout, unique_key, trace)
    OVERRIDING SYSTEM VALUE
    VALUES ({new_id_uid}, %(type)s, %(queue)s, %(data)s::jsonb, %(priority)s, %(max_attempts)s,
            coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s::float8, 0))),
            %(retry_delay)s, %(retry_backoff)s, %(retry_delay_max)s, %(timeout)s, %(unique_key)s,
            %(trace)s::jsonb)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state < 'completed' DO NOTHING
    RETURNING id, uid, queue
)
SELECT id, uid, (SELECT count(pg_notify(%(channel)s, queue)) FROM inserted WHERE %(notify)s) AS woken
FROM inserted;

-- name: reserve_job_ids
-- Take %(n)s ids from the job sequence, and the clock that delays count from, for a COPY.
SELECT now() AS now,
       array(SELECT nextval('{schema}.job_id_seq') FROM generate_series(1, %(n)s)) AS ids;

-- name: copy_jobs
-- Bulk load jobs whose ids were reserved (COPY writes given identity values), with their uids.
COPY {schema}.job (id, uid, data, type, queue, priority, max_attempts, run_at,
                   retry_delay, retry_backoff, retry_delay_max, timeout) FROM STDIN;

-- name: copy_jobs_now
-- copy_jobs for jobs that may run at once: run_at takes its default, now(), which spares
-- PostgreSQL parsing a timestamp per row (a fifth of the COPY's server time).
COPY {schema}.job (id, uid, data, type, queue, priority, max_attempts,
                   retry_delay, retry_backoff, retry_delay_max, timeout) FROM STDIN;

-- name: insert_jobs
-- Insert one row per element of the parallel arrays, in one round trip, and wake the
-- workers of each queue once (delivered on commit; identical notifications in one
-- transaction are merged by PostgreSQL). A job whose unique_key matches a job that
-- still waits or runs is skipped and returns no row. %(trace)s: the enqueue's trace
-- context for every row (NULL unless tracing is on). Jobs with a concurrency key come this way.
WITH inserted AS (
    INSERT INTO {schema}.job AS j (id, uid, type, queue, data, priority, max_attempts, run_at,
                                   retry_delay, retry_backoff, retry_delay_max, timeout, unique_key, trace,
                                   concurrency_key)
    OVERRIDING SYSTEM VALUE
    SELECT {new_id_uid}, v.type, v.queue, v.data::jsonb, v.priority, v.max_attempts,
           coalesce(v.run_at, now() + make_interval(secs => coalesce(v.delay, 0))),
           v.retry_delay, v.retry_backoff, v.retry_delay_max, v.timeout, v.unique_key, %(trace)s::jsonb,
           v.concurrency_key
    FROM unnest(%(type)s::text[], %(queue)s::text[], %(data)s::text[], %(priority)s::int[],
                %(max_attempts)s::int[], %(run_at)s::timestamptz[], %(delay)s::float8[],
                %(retry_delay)s::float8[], %(retry_backoff)s::bool[], %(retry_delay_max)s::float8[],
                %(timeout)s::float8[], %(unique_key)s::text[], %(concurrency_key)s::text[])
         AS v(type, queue, data, priority, max_attempts, run_at, delay,
              retry_delay, retry_backoff, retry_delay_max, timeout, unique_key, concurrency_key)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state < 'completed' DO NOTHING
    RETURNING j.id, j.uid, j.queue, j.unique_key
), woken AS (
    SELECT pg_notify(%(channel)s, q.queue)
    FROM (SELECT DISTINCT queue FROM inserted) AS q
    WHERE %(notify)s
)
SELECT i.id, i.uid, i.unique_key, (SELECT count(*) FROM woken) AS woken
FROM inserted AS i
ORDER BY i.id;

-- name: insert_throttled_job
-- Insert one job unless another took its unique_key less than %(unique_for)s seconds ago
-- (throttle, and an idempotency key that outlives the job); return the job that holds the key
-- (created: whether this statement made it). With %(notify)s, wake its queue's workers on commit.
-- The key is a row of job_key with an expiry, not a unique index on job: the window must outlast
-- the job (finished jobs are pruned, and a key must not be free again because its job finished),
-- and a (key, time slot) index would let two jobs through either side of a slot's edge. The row
-- is upserted in the caller's transaction: it commits or rolls back with the job, and enqueuers
-- of one key wait for each other on it. Every conflict updates the row (to itself while it holds),
-- so that RETURNING gives the holder even when it committed after this statement's snapshot.
WITH fresh AS MATERIALIZED (
    SELECT n.id, {schema}.job_uid(n.id) AS uid FROM (SELECT nextval('{schema}.job_id_seq') AS id) AS n
), taken AS (
    INSERT INTO {schema}.job_key AS k (key, job_id, job_uid, expires_at)
    SELECT %(unique_key)s, f.id, f.uid, now() + make_interval(secs => %(unique_for)s) FROM fresh AS f
    ON CONFLICT (key) DO UPDATE
    SET job_id = CASE WHEN k.expires_at <= now() THEN excluded.job_id ELSE k.job_id END,
        job_uid = CASE WHEN k.expires_at <= now() THEN excluded.job_uid ELSE k.job_uid END,
        expires_at = CASE WHEN k.expires_at <= now() THEN excluded.expires_at ELSE k.expires_at END
    RETURNING k.job_id, k.job_uid
), inserted AS (
    INSERT INTO {schema}.job (id, uid, type, queue, data, priority, max_attempts, run_at,
                              retry_delay, retry_backoff, retry_delay_max, timeout, trace, concurrency_key,
                              dead_letter)
    OVERRIDING SYSTEM VALUE
    SELECT f.id, f.uid, %(type)s, %(queue)s, %(data)s::jsonb, %(priority)s, %(max_attempts)s,
           coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s::float8, 0))),
           %(retry_delay)s, %(retry_backoff)s, %(retry_delay_max)s, %(timeout)s, %(trace)s::jsonb,
           %(concurrency_key)s, %(dead_letter)s
    FROM fresh AS f JOIN taken AS t ON t.job_id = f.id
    RETURNING id, queue
)
SELECT t.job_id AS id, t.job_uid AS uid, t.job_id = f.id AS created,
       (SELECT count(pg_notify(%(channel)s, queue)) FROM inserted WHERE %(notify)s) AS woken
FROM taken AS t CROSS JOIN fresh AS f;

-- name: insert_debounced_job
-- Insert one job to run %(debounce)s seconds from now, or, while a job with its debounce key has
-- not started, give that one this enqueue's data and run time instead; return the job (created:
-- whether this statement made it). With %(notify)s, wake its queue's workers on commit.
-- Race-free by the partial unique index job_debounce_key (state = 'created'): enqueuers of one
-- key wait for each other on it, a job a worker holds is skipped by no one but changed by no
-- one either (the update waits for its lock, and once it is claimed the index no longer
-- matches it, so the insert goes ahead: a new job, to run after the debounce).
WITH fresh AS MATERIALIZED (
    SELECT nextval('{schema}.job_id_seq') AS id
), upserted AS (
    INSERT INTO {schema}.job AS j (id, uid, type, queue, data, priority, max_attempts, run_at, retry_delay,
                                   retry_backoff, retry_delay_max, timeout, debounce_key, trace,
                                   concurrency_key, dead_letter)
    OVERRIDING SYSTEM VALUE
    SELECT f.id, {schema}.job_uid(f.id), %(type)s, %(queue)s, %(data)s::jsonb, %(priority)s, %(max_attempts)s,
           now() + make_interval(secs => %(debounce)s), %(retry_delay)s, %(retry_backoff)s,
           %(retry_delay_max)s, %(timeout)s, %(unique_key)s, %(trace)s::jsonb, %(concurrency_key)s,
           %(dead_letter)s
    FROM fresh AS f
    ON CONFLICT (debounce_key) WHERE debounce_key IS NOT NULL AND state = 'created'
    -- From the parameters, not excluded.*: reading excluded.data would need SELECT on job.data,
    -- which producers do not have.
    DO UPDATE SET data = %(data)s::jsonb, run_at = now() + make_interval(secs => %(debounce)s)
    RETURNING j.id, j.uid, j.queue
)
SELECT u.id, u.uid, u.id = f.id AS created,
       (SELECT count(pg_notify(%(channel)s, queue)) FROM upserted WHERE %(notify)s) AS woken
FROM upserted AS u CROSS JOIN fresh AS f;

-- name: get_job
SELECT * FROM {schema}.job WHERE id = %(id)s;

-- name: job_id_of
-- The id of the job with uid %(uid)s (no row if there is none). A uid made from its job's id
-- (%(id)s, read from the uid by the caller; NULL for any other) is found by the primary key;
-- one made before that layout, by the partial index job_uid_legacy.
SELECT id FROM {schema}.job WHERE id = %(id)s AND uid = %(uid)s
UNION ALL
SELECT id FROM {schema}.job WHERE {schema}.uid_version(uid) <> 8 AND uid = %(uid)s;

-- name: exchange
-- The worker's one statement per round trip: record outcomes and claim more, in one
-- transaction. A worker that lost a job's lease (it was rescued, or cancelled) updates
-- nothing for it: every write is guarded by the claim's lease id.
--
-- done_*: successes. lease_id is set only while a job is active, so the guard needs no
-- state test; a state test would let the planner walk the job_lease index, whose dead
-- entries grow with every claim, once per row of a generic plan (quadratic in the batch).
-- An absent output array (NULL) stands for all-NULL outputs: unnest pads it.
--
-- failed_*: failed attempts go back to 'retry' after retry_in seconds while attempts
-- remain, else to 'failed' (retry_in NULL forces 'failed').
--
-- The claim takes up to %(limit)s runnable jobs: per queue, walk the fetch index in its own
-- order (priority DESC, run_at, id), skipping rows other workers hold, then keep the best
-- %(limit)s over all queues and at most cap[type] of each capped type. Types in %(full)s
-- are at their concurrency limit in this worker and are not claimed. Each claim counts an
-- attempt and gets a fresh lease id. Claimed rows come back as one JSON array (decoding
-- JSON is far cheaper for the worker than building rows).
--
-- Jobs this statement finished (completed, or failed for good) are announced to waiters
-- (App.wait_for) with one notification on {schema}_done: their ids, space-separated, or ''
-- ("some finished, look") past 300 ids, where the payload could outgrow NOTIFY's 8000 bytes.
-- Only while someone waits (see {waiters_absent}): a NOTIFY takes a lock that serialises
-- every notifying commit of the server, so the statement sends none when it can help it.
WITH {exchange_outcomes}, candidates AS (
    SELECT c.id, c.type, c.priority, c.run_at
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL ({claim_candidates}) AS c
), ranked AS (
    SELECT id, type, priority, run_at,
           row_number() OVER (PARTITION BY type ORDER BY priority DESC, run_at, id) AS nth
    FROM candidates
), picked AS (
    SELECT r.id
    FROM ranked AS r
    LEFT JOIN unnest(%(capped)s::text[], %(caps)s::int[]) AS cap(type, slots) ON cap.type = r.type
    WHERE cap.slots IS NULL OR r.nth <= cap.slots
    ORDER BY r.priority DESC, r.run_at, r.id
    LIMIT %(limit)s
), claimed AS ({claim_picked}
), {exchange_result};

-- name: claim
-- The exchange's claim alone, for a worker with no outcome to record and no capped type (an
-- idle worker woken by a new job): a smaller statement to plan and run, which is most of the
-- time from wake-up to handler start. Same claim, same result columns.
WITH picked AS (
    SELECT c.id
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL ({claim_candidates}) AS c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s
), claimed AS ({claim_picked}
)
SELECT NULL::bigint[] AS completed, NULL::json AS failed, {claimed_json} AS claimed;

-- name: exchange_one
-- The exchange of a worker with one queue and no capped type (the common case): the same
-- outcomes and the same claim, without the per-queue walk and the per-type ranking, which
-- cost more to plan than to run.
WITH {exchange_outcomes}, picked AS ({claim_one_candidates}
), claimed AS ({claim_picked}
), {exchange_result};

-- name: claim_one
-- claim for a worker with one queue and no capped type (see exchange_one).
WITH picked AS ({claim_one_candidates}
), claimed AS ({claim_picked}
)
SELECT NULL::bigint[] AS completed, NULL::json AS failed, {claimed_json} AS claimed;

-- name: claim_one_candidates
-- A part of exchange_one and claim_one, not a statement: runnable jobs of the queue %(queue)s,
-- walking the fetch index in its own order, skipping rows other workers hold, under the constant
-- {claim_most} (CLAIM_MOST in sql.py: a constant keeps one generic plan); claim_picked reads
-- only the first %(limit)s of them, so no row past those is locked. Nothing when the queue is
-- paused or has limits (which only claim_limited claims).
SELECT id FROM {schema}.job
WHERE queue = %(queue)s AND state < 'active' AND run_at <= now()
  AND NOT EXISTS (SELECT FROM {schema}.queue AS p WHERE p.name = %(queue)s
                  AND (p.paused OR p.concurrency IS NOT NULL OR p.rate_limit IS NOT NULL))
ORDER BY priority DESC, run_at, id
LIMIT {claim_most}
FOR UPDATE SKIP LOCKED

-- name: exchange_outcomes
-- A part of exchange and exchange_one, not a statement: the CTEs "done" and "failed", which
-- record the outcomes (see exchange).
done AS (
    UPDATE {schema}.job AS j
    SET state = 'completed', output = v.output::jsonb, duration = v.duration, error = NULL,
        finished_at = now(), lease_id = NULL, lease_expires_at = NULL
    FROM unnest(%(done_id)s::bigint[], %(done_lease)s::uuid[], %(done_output)s::text[],
                %(done_duration)s::float8[]) AS v(id, lease_id, output, duration)
    WHERE j.id = v.id AND j.lease_id = v.lease_id
    RETURNING j.id
), failed AS (
    UPDATE {schema}.job AS j
    SET state = CASE WHEN v.retry_in IS NULL OR j.attempts >= j.max_attempts
                     THEN 'failed' ELSE 'retry' END::{schema}.job_state,
        run_at = CASE WHEN v.retry_in IS NULL OR j.attempts >= j.max_attempts
                      THEN j.run_at ELSE now() + make_interval(secs => v.retry_in) END,
        finished_at = CASE WHEN v.retry_in IS NULL OR j.attempts >= j.max_attempts
                           THEN now() END,
        error = v.error, duration = v.duration,
        errors = coalesce(j.errors, '[]'::jsonb)
                 || jsonb_build_array(jsonb_build_object('attempt', j.attempts, 'error', v.error, 'at', now())),
        lease_id = NULL, lease_expires_at = NULL
    FROM unnest(%(failed_id)s::bigint[], %(failed_lease)s::uuid[], %(failed_error)s::text[],
                %(failed_retry_in)s::float8[], %(failed_duration)s::float8[])
         AS v(id, lease_id, error, retry_in, duration)
    WHERE j.id = v.id AND j.lease_id = v.lease_id
    RETURNING j.id, j.state
)

-- name: exchange_result
-- A part of exchange and exchange_one, not a statement: the CTE "finished" and the result
-- row: ids completed, (id, state) of failed attempts, the claimed jobs, and the announcement
-- to waiters (see exchange).
finished AS (
    SELECT id FROM done UNION ALL SELECT id FROM failed WHERE state = 'failed'
)
SELECT (SELECT array_agg(id) FROM done) AS completed,
       (SELECT json_agg(json_build_array(id, state)) FROM failed) AS failed,
       {claimed_json} AS claimed,
       (SELECT pg_notify({done_channel}, {finished_payload}) FROM finished
        HAVING count(*) > 0 AND NOT {waiters_absent}) AS announced

-- name: claim_candidates
-- A part of exchange and claim, not a statement: up to %(limit)s runnable jobs of the queue
-- q.name, walking the fetch index in its own order (priority DESC, run_at, id), skipping rows
-- other workers hold and types in %(full)s. Paused queues are skipped, and so are queues with
-- limits, which only claim_limited claims.
SELECT id, type, priority, run_at
FROM {schema}.job
WHERE queue = q.name AND state < 'active' AND run_at <= now()
  AND type <> ALL(%(full)s::text[])
  AND NOT EXISTS (SELECT FROM {schema}.queue AS p WHERE p.name = q.name
                  AND (p.paused OR p.concurrency IS NOT NULL OR p.rate_limit IS NOT NULL))
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: claimed_json
-- A part of the claiming statements, not a statement: the jobs of the CTE "claimed" (what
-- claim_picked returns) as one JSON array of arrays, each in the order of the fields of the
-- worker's ClaimedJob: arrays cost the worker a quarter of what objects cost to decode and build.
-- In the order the update met them: the worker puts them in priority order (an ordered aggregate
-- cost the server ~5 % of a drain's exchange time).
(SELECT json_agg(json_build_array(id, type, queue, data, priority, attempts, max_attempts, retry_delay,
                                  retry_backoff, retry_delay_max, timeout, lease_id, trace, uid))
 FROM claimed)

-- name: claim_picked
-- A part of exchange and claim, not a statement: claim the first %(limit)s jobs of the CTE
-- "picked": count an attempt, give each a fresh lease; return what the worker needs to run them
-- (claimed_json hands it over). The ids go
-- as an array: joined to "picked", a claim of a few hundred jobs was planned as a hash join
-- over the whole table.
UPDATE {schema}.job AS j
SET state = 'active',
    attempts = j.attempts + 1,
    lease_id = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    started_at = now(),
    finished_at = NULL,
    worker_id = %(worker_id)s,
    progress = NULL
WHERE j.id = ANY(ARRAY(SELECT id FROM picked LIMIT %(limit)s))
RETURNING j.id, j.type, j.queue, j.data, j.priority, j.attempts, j.max_attempts,
          j.retry_delay, j.retry_backoff, j.retry_delay_max, j.timeout, j.lease_id, j.trace, j.uid

-- name: flow_lock
-- The first statement of claim_limited's transaction: take the transaction-scoped advisory locks
-- of the limited types %(types)s and of the queues of %(queues)s that have limits, in one order
-- (no deadlock), waiting for them. Claims that count the same limits so run one after another,
-- each seeing what the one before claimed (its next statement takes a new snapshot), while
-- claims of other types and queues run beside them. Returns the limited queues locked.
SELECT array_agg(s.name) FILTER (WHERE s.kind = 'queue') AS queues,
       count(pg_advisory_xact_lock(hashtext('pgqueue.flow ' || %(schema)s), hashtext(s.kind || ' ' || s.name)))
           AS locked
FROM (
    SELECT 'type' AS kind, t AS name FROM unnest(%(types)s::text[]) AS t
    UNION
    SELECT 'queue', name FROM {schema}.queue
    WHERE name = ANY(%(queues)s::text[]) AND (concurrency IS NOT NULL OR rate_limit IS NOT NULL)
    ORDER BY 1, 2
) AS s;

-- name: limited_queues
-- Which of the queues %(queues)s have limits (a worker's watch: those it claims with claim_limited).
SELECT coalesce(array_agg(name ORDER BY name), ARRAY[]::text[]) AS queues FROM {schema}.queue
WHERE name = ANY(%(queues)s::text[]) AND (concurrency IS NOT NULL OR rate_limit IS NOT NULL);

-- name: claim_limited
-- The claim of a worker some of whose types or queues have limits across every worker (flow_lock
-- holds their locks). Limits: per type and per (type, concurrency key) from the worker's tasks
-- (parallel arrays by type; NULL: no such limit), per queue from the queue table (those
-- flow_lock locked, %(locked)s; a queue limited since then is skipped). A concurrency limit
-- counts active jobs: every way a job stops running (completion, failure, retry, cancel,
-- rescue, hand-back, deletion) frees its place. A rate limit counts the starts in flow_start
-- within its window before now() (one row per scope and claim): claims of a scope take turns
-- and each counts every start after its own now() too, so no window of that length, anywhere,
-- holds more starts than the limit.
-- Scopes with no room left are skipped in the scan, so other jobs still flow; the jobs picked
-- are ranked per key, type and queue, and a job is claimed only if it is within the room of
-- each (conservative when several limits meet: the next claim takes the rest). Returns the
-- claim's jobs and when the oldest start of a rate-limited scope leaves its window (the
-- worker claims again then, when jobs were held back). Fair types (%(fair)s) are claimed
-- round-robin over their concurrency keys, from where the last claim left off (flow_cursor).
WITH RECURSIVE limits AS (
    SELECT 'type' AS kind, l.name, l.conc, l.rate, l.win
    FROM unnest(%(types)s::text[], %(conc)s::int[], %(rate)s::int[], %(win)s::float8[])
         AS l(name, conc, rate, win)
    WHERE l.conc IS NOT NULL OR l.rate IS NOT NULL
    UNION ALL
    SELECT 'key', l.name, l.conc, l.rate, l.win
    FROM unnest(%(types)s::text[], %(key_conc)s::int[], %(key_rate)s::int[], %(key_win)s::float8[])
         AS l(name, conc, rate, win)
    WHERE l.conc IS NOT NULL OR l.rate IS NOT NULL
    UNION ALL
    SELECT 'queue', name, concurrency, rate_limit, rate_window FROM {schema}.queue
    WHERE name = ANY(%(locked)s::text[]) AND (concurrency IS NOT NULL OR rate_limit IS NOT NULL)
), active AS (
    SELECT s.kind, s.name, s.key, count(*) AS n
    FROM {schema}.job AS j
    CROSS JOIN LATERAL (VALUES ('type', j.type, ''), ('queue', j.queue, ''), ('key', j.type, j.concurrency_key))
         AS s(kind, name, key)
    WHERE j.state = 'active' AND s.key IS NOT NULL
      AND EXISTS (SELECT FROM limits AS l WHERE l.kind = s.kind AND l.name = s.name AND l.conc IS NOT NULL)
    GROUP BY s.kind, s.name, s.key
), started AS (
    SELECT f.kind, f.name, f.key, sum(f.n) AS n, min(f.at) AS oldest
    FROM {schema}.flow_start AS f JOIN limits AS l ON l.kind = f.kind AND l.name = f.name
    WHERE l.rate IS NOT NULL AND f.at > now() - make_interval(secs => l.win)
    GROUP BY f.kind, f.name, f.key
), room AS (
    SELECT u.kind, u.name, u.key, least(l.conc - coalesce(a.n, 0), l.rate - coalesce(s.n, 0)) AS room
    FROM (SELECT kind, name, key FROM active UNION SELECT kind, name, key FROM started) AS u
    JOIN limits AS l ON l.kind = u.kind AND l.name = u.name
    LEFT JOIN active AS a ON a.kind = u.kind AND a.name = u.name AND a.key = u.key
    LEFT JOIN started AS s ON s.kind = u.kind AND s.name = u.name AND s.key = u.key
), scanned AS (
    SELECT c.id, c.type, c.queue, c.priority, c.run_at, c.concurrency_key
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, type, queue, priority, run_at, concurrency_key
        FROM {schema}.job AS j
        WHERE queue = q.name AND state < 'active' AND run_at <= now()
          AND (concurrency_key IS NULL OR type <> ALL(%(fair)s::text[]))
          AND {flow_claimable}
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
), fair_walk(queue, type, key, step) AS (
    -- Fair types: the distinct keys with jobs waiting in each queue, from the one after the key
    -- served last (flow_cursor), round the circle; at most %(limit)s steps (with fewer keys, a
    -- key comes round again). One probe of the job_fair index per step.
    SELECT w.queue, w.type, {fair_next_key}, 1
    FROM (SELECT q.name AS queue, t.type, c.key
          FROM unnest(%(queues)s::text[]) AS q(name)
          CROSS JOIN unnest(%(fair)s::text[]) AS t(type)
          LEFT JOIN {schema}.flow_cursor AS c ON c.queue = q.name AND c.type = t.type) AS w
    UNION ALL
    SELECT w.queue, w.type, {fair_next_key}, w.step + 1
    FROM fair_walk AS w
    WHERE w.key IS NOT NULL AND w.step < %(limit)s
), fair_keys AS (
    SELECT queue, type, key, min(step) AS step FROM fair_walk WHERE key IS NOT NULL GROUP BY queue, type, key
), candidates AS (
    SELECT s.*, 1::bigint AS round, 0 AS step FROM scanned AS s
    UNION ALL
    -- Each key's best jobs, a share of %(limit)s each: round 1 takes one of every key in walk
    -- order, round 2 a second, and so on.
    SELECT c.*, row_number() OVER (PARTITION BY c.queue, c.type, c.concurrency_key
                                   ORDER BY c.priority DESC, c.run_at, c.id), k.step
    FROM fair_keys AS k
    CROSS JOIN LATERAL (
        SELECT id, type, queue, priority, run_at, concurrency_key
        FROM {schema}.job AS j
        WHERE queue = k.queue AND type = k.type AND concurrency_key = k.key
          AND state < 'active' AND run_at <= now() AND {flow_claimable}
        ORDER BY priority DESC, run_at, id
        LIMIT ceil(%(limit)s::float8 / (SELECT count(*) FROM fair_keys))::int
        FOR UPDATE SKIP LOCKED
    ) AS c
), ranked AS (
    SELECT c.*,
           row_number() OVER (PARTITION BY c.type, c.concurrency_key ORDER BY c.priority DESC, c.run_at, c.id) AS key_nth,
           row_number() OVER (PARTITION BY c.type ORDER BY c.priority DESC, c.run_at, c.id) AS type_nth,
           row_number() OVER (PARTITION BY c.queue ORDER BY c.priority DESC, c.run_at, c.id) AS queue_nth
    FROM candidates AS c
), picked AS (
    SELECT r.id, r.type, r.queue, r.concurrency_key, r.step
    FROM ranked AS r
    LEFT JOIN unnest(%(capped)s::text[], %(caps)s::int[]) AS cap(type, slots) ON cap.type = r.type
    LEFT JOIN limits AS lk ON lk.kind = 'key' AND lk.name = r.type
    LEFT JOIN room AS rk ON rk.kind = 'key' AND rk.name = r.type AND rk.key = r.concurrency_key
    LEFT JOIN limits AS lt ON lt.kind = 'type' AND lt.name = r.type
    LEFT JOIN room AS rt ON rt.kind = 'type' AND rt.name = r.type
    LEFT JOIN limits AS lq ON lq.kind = 'queue' AND lq.name = r.queue
    LEFT JOIN room AS rq ON rq.kind = 'queue' AND rq.name = r.queue
    WHERE (cap.slots IS NULL OR r.type_nth <= cap.slots)
      AND (r.concurrency_key IS NULL OR lk.name IS NULL
           OR r.key_nth <= coalesce(rk.room, least(lk.conc, lk.rate)))
      AND (lt.name IS NULL OR r.type_nth <= coalesce(rt.room, least(lt.conc, lt.rate)))
      AND (lq.name IS NULL OR r.queue_nth <= coalesce(rq.room, least(lq.conc, lq.rate)))
    ORDER BY r.priority DESC, r.round, r.step, r.run_at, r.id
    LIMIT %(limit)s
), claimed AS ({claim_picked}
), logged AS (
    INSERT INTO {schema}.flow_start (kind, name, key, at, n)
    SELECT s.kind, s.name, s.key, now(), count(*)
    FROM picked AS p  -- every row picked is claimed: the scan locked it
    CROSS JOIN LATERAL (VALUES ('type', p.type, ''), ('queue', p.queue, ''), ('key', p.type, p.concurrency_key))
         AS s(kind, name, key)
    JOIN limits AS l ON l.kind = s.kind AND l.name = s.name AND l.rate IS NOT NULL
    WHERE s.key IS NOT NULL
    GROUP BY s.kind, s.name, s.key
), turned AS (
    INSERT INTO {schema}.flow_cursor AS c (queue, type, key)
    SELECT DISTINCT ON (p.queue, p.type) p.queue, p.type, p.concurrency_key
    FROM picked AS p
    WHERE p.step > 0
    ORDER BY p.queue, p.type, p.step DESC
    ON CONFLICT (queue, type) DO UPDATE SET key = excluded.key
), expired AS (
    -- A claim that waited for its lock counts from its transaction's start, which may be earlier
    -- than that of the claim before it: rows stay five minutes past their window for it.
    DELETE FROM {schema}.flow_start AS f USING limits AS l
    WHERE l.kind = f.kind AND l.name = f.name
      AND f.at <= now() - make_interval(secs => l.win) - interval '5 minutes'
)
SELECT {claimed_json} AS claimed,
       (SELECT extract(epoch FROM min(coalesce(s.oldest, now()) + make_interval(secs => l.win)) - clock_timestamp())
        FROM limits AS l LEFT JOIN started AS s ON s.kind = l.kind AND s.name = l.name
        WHERE l.rate IS NOT NULL)::float8 AS next_room_in;

-- name: flow_claimable
-- A part of claim_limited, not a statement: the job j may be claimed now: its queue is neither
-- paused nor limited but unlocked, its type is not full in this worker, and no queue, type or key
-- it counts against is out of room.
type <> ALL(%(full)s::text[])
AND NOT EXISTS (SELECT FROM {schema}.queue AS p WHERE p.name = j.queue
                AND (p.paused OR ((p.concurrency IS NOT NULL OR p.rate_limit IS NOT NULL)
                                  AND p.name <> ALL(%(locked)s::text[]))))
AND NOT EXISTS (SELECT FROM room AS r WHERE r.room <= 0
                AND ((r.kind = 'queue' AND r.name = j.queue) OR (r.kind = 'type' AND r.name = j.type)
                     OR (r.kind = 'key' AND r.name = j.type AND r.key = j.concurrency_key)))

-- name: fair_next_key
-- A part of claim_limited, not a statement: the concurrency key after w.key among the jobs of
-- type w.type waiting in queue w.queue, or the first one (round the circle); NULL when none waits.
coalesce((SELECT min(j.concurrency_key) FROM {schema}.job AS j
          WHERE j.queue = w.queue AND j.type = w.type AND j.state < 'active' AND j.concurrency_key > w.key),
         (SELECT min(j.concurrency_key) FROM {schema}.job AS j
          WHERE j.queue = w.queue AND j.type = w.type AND j.state < 'active' AND j.concurrency_key IS NOT NULL))

-- name: complete
-- A handler completes its own job in its own transaction (JobContext.complete), guarded by
-- the claim's lease like the worker's exchange: a lost lease updates nothing. Waiters
-- (App.wait_for) hear of it when that transaction commits.
WITH completed AS (
    UPDATE {schema}.job
    SET state = 'completed', output = %(output)s::jsonb, duration = %(duration)s, error = NULL,
        finished_at = now(), lease_id = NULL, lease_expires_at = NULL
    WHERE id = %(id)s AND lease_id = %(lease_id)s::uuid
    RETURNING id
)
SELECT id, pg_notify({done_channel}, id::text) FROM completed;

-- name: waiters_absent
-- A part of exchange, not a statement: true when nobody waits for results (App.wait_for), in
-- which case the transaction keeps one of the waiters' advisory locks (a random one of 8) in
-- exclusive mode until it ends. A waiter holds all 8 in shared mode while it waits
-- (wait_register), so the lock is free only when none waits. One that registers while this
-- transaction runs waits for it to end before reading its job, so it reads what this
-- transaction wrote; one that registered before makes this false, and the notification goes.
-- Two exchanges that pick the same lock at the same moment make the second announce for
-- nothing: harmless. Evaluated after the jobs were written (the caller's HAVING over them).
pg_try_advisory_xact_lock({waiters_key}, floor(random() * 8)::int)

-- name: wait_register
-- A waiter for results says so: it holds the 8 advisory locks of waiters_absent in shared
-- mode (session-level: until its connection closes), each taken once any exchange that saw no
-- waiter on it has ended. Run after LISTEN on {schema}_done and before reading the job.
SELECT count(pg_advisory_lock_shared({waiters_key}, k)) FROM generate_series(0, 7) AS k;

-- name: finished_payload
-- A part of exchange, not a statement: the payload announcing the ids of the CTE "finished".
CASE WHEN count(*) <= 300 THEN string_agg(id::text, ' ') ELSE '' END

-- name: release
-- Hand unfinished jobs back to the queue at once (graceful shutdown): the interrupted
-- attempt is not counted. Guarded by the lease.
UPDATE {schema}.job AS j
SET state = CASE WHEN j.attempts <= 1 THEN 'created' ELSE 'retry' END::{schema}.job_state,
    attempts = greatest(j.attempts - 1, 0),
    run_at = now(), lease_id = NULL, lease_expires_at = NULL, worker_id = NULL
FROM unnest(%(id)s::bigint[], %(lease_id)s::uuid[]) AS v(id, lease_id)
WHERE j.id = v.id AND j.lease_id = v.lease_id
RETURNING j.id, j.queue;

-- name: release_lost
-- After a claim failed, jobs active under this worker's id that it is not running, nor about
-- to record, were claimed by a statement that committed while its answer was lost with the
-- connection: hand them back at once (the attempt is not counted) rather than leave them to
-- wait for their lease to expire. Few rows are active at any time: the job_lease index finds them.
UPDATE {schema}.job AS j
SET state = CASE WHEN j.attempts <= 1 THEN 'created' ELSE 'retry' END::{schema}.job_state,
    attempts = greatest(j.attempts - 1, 0),
    run_at = now(), lease_id = NULL, lease_expires_at = NULL, worker_id = NULL
WHERE j.state = 'active' AND j.worker_id = %(worker_id)s AND j.id <> ALL(%(keep)s::bigint[])
RETURNING j.id, j.queue;

-- name: heartbeat
-- Extend the leases of a worker's running jobs; returns the ones that are still its own.
-- A handler may complete its job in its own transaction (JobContext.complete): that UPDATE
-- holds the job's row lock until the handler commits or rolls back. So the renewal skips
-- locked rows instead of waiting behind them (and stalling every other renewal): a missed
-- renewal is harmless, the next comes within a third of the lease, and rescue skips locked
-- rows too. The answer is read from the last committed rows, not from the renewal: a row
-- locked by an uncommitted completion still shows this lease, so the job is not taken for
-- lost; and a job that this very attempt completed and committed (state 'completed' at the
-- same attempt number: every claim adds one, and only the lease holder's hand-back takes one
-- away) is still this worker's to finish, not a lost one.
WITH mine AS (
    SELECT v.id, v.lease_id, v.attempt
    FROM unnest(%(id)s::bigint[], %(lease_id)s::uuid[], %(attempt)s::int[]) AS v(id, lease_id, attempt)
), renewed AS (
    UPDATE {schema}.job AS j
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    FROM (
        SELECT k.id
        FROM {schema}.job AS k JOIN mine AS m ON k.id = m.id AND k.lease_id = m.lease_id
        FOR UPDATE OF k SKIP LOCKED
    ) AS free
    WHERE j.id = free.id
)
SELECT j.id
FROM {schema}.job AS j JOIN mine AS m ON j.id = m.id
WHERE j.lease_id = m.lease_id OR (j.state = 'completed' AND j.attempts = m.attempt);

-- name: rescue
-- Jobs whose lease expired belong to a worker that died or stalled. The attempt was
-- counted at claim, so a job that keeps killing its worker ends 'failed'.
-- Only one instance sweeps at a time (transaction-scoped advisory lock).
-- Locked rows are skipped: they are being finished right now, by a worker's batch or by a
-- handler's own transaction (JobContext.complete), whose lock the heartbeat could not renew
-- past. Waiting would stall the sweep behind that transaction; if it commits, the job is
-- done, and if it rolls back, the next sweep finds the job as it was.
WITH leader AS (
    SELECT pg_try_advisory_xact_lock(%(lock_key)s) AS ok
), expired AS (
    SELECT j.id
    FROM {schema}.job AS j, leader
    WHERE leader.ok AND j.state = 'active' AND j.lease_expires_at < now()
    FOR UPDATE OF j SKIP LOCKED
), rescued AS (
    UPDATE {schema}.job AS j
    SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'retry' END::{schema}.job_state,
        finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        run_at = now(),
        error = 'lease expired: the worker ' || coalesce(j.worker_id, '?') || ' stopped renewing it',
        errors = coalesce(j.errors, '[]'::jsonb)
                 || jsonb_build_array(jsonb_build_object(
                        'attempt', j.attempts, 'at', now(),
                        'error', 'lease expired: the worker ' || coalesce(j.worker_id, '?') || ' stopped renewing it')),
        lease_id = NULL, lease_expires_at = NULL
    FROM expired
    WHERE j.id = expired.id
    RETURNING j.id, j.queue, j.state
)
SELECT id, queue, state,
       (SELECT count(pg_notify({done_channel}, f.id::text)) FROM rescued AS f WHERE f.state = 'failed') AS announced
FROM rescued;

-- name: prune
-- Delete up to %(batch)s finished jobs older than their retention: their queue's (the queue
-- table's completed_retention, failed_retention), else the workers' defaults. The shortest
-- retention of all bounds the walk of the job_finished index.
-- (= ANY(ARRAY(...)) keeps the delete on the primary key; IN (...) planned a hash
-- semi-join over the whole table.)
DELETE FROM {schema}.job
WHERE id = ANY(ARRAY(
    SELECT j.id
    FROM {schema}.job AS j
    LEFT JOIN {schema}.queue AS q ON q.name = j.queue
    WHERE j.state > 'active'
      AND j.finished_at < now() - make_interval(secs => least(
              %(completed_seconds)s, %(failed_seconds)s,
              (SELECT min(least(completed_retention, failed_retention)) FROM {schema}.queue)))
      AND j.finished_at < now() - make_interval(secs => CASE
              WHEN j.state = 'completed' THEN coalesce(q.completed_retention, %(completed_seconds)s)
              ELSE coalesce(q.failed_retention, %(failed_seconds)s) END)
    LIMIT %(batch)s
    FOR UPDATE OF j SKIP LOCKED
));

-- name: prune_keys
-- Delete up to %(batch)s expired keys of throttled enqueues (unique_for). An enqueue takes an
-- expired key whether or not its row is still there: this only keeps the table small. A key an
-- enqueue holds is skipped; one renewed meanwhile no longer matches once locked.
DELETE FROM {schema}.job_key
WHERE key = ANY(ARRAY(
    SELECT key FROM {schema}.job_key WHERE expires_at <= now()
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
));

-- name: xmin_holders
-- Whatever holds back the xmin horizon: sessions (their xmin is visible to any role; their
-- transaction start only to privileged ones), replication slots, prepared transactions.
SELECT 'backend ' || pid || ' (' || coalesce(usename, '?') || ', '
           || coalesce(nullif(application_name, ''), '?') || ')' AS holder,
       backend_xmin::text AS xmin,
       extract(epoch FROM now() - xact_start)::float8 AS held_for
FROM pg_stat_activity
WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
UNION ALL
SELECT 'replication slot ' || slot_name, coalesce(xmin, catalog_xmin)::text, NULL
FROM pg_replication_slots
WHERE xmin IS NOT NULL OR catalog_xmin IS NOT NULL
UNION ALL
SELECT 'prepared transaction ' || gid, transaction::text, extract(epoch FROM now() - prepared)::float8
FROM pg_prepared_xacts;

-- name: cancel
-- Cancel a job that has not finished. A running job's worker is fenced out, and told on the
-- schema's channel (' cancel <id> <lease>', never a queue name: names have no surrounding
-- spaces) so that it stops the handler; waiters hear of it on {schema}_done. Both on commit.
WITH old AS MATERIALIZED (
    SELECT id, lease_id FROM {schema}.job WHERE id = %(id)s AND state < 'completed' FOR UPDATE
), cancelled AS (
    UPDATE {schema}.job
    SET state = 'cancelled', finished_at = now(), lease_id = NULL, lease_expires_at = NULL
    WHERE id = ANY(ARRAY(SELECT id FROM old))
    RETURNING id
)
SELECT c.id, {cancel_notices}
FROM cancelled AS c;

-- name: cancel_notices
-- A part of cancel and cancel_batch, not a statement: tell the workers running jobs of "old"
-- that were cancelled to stop them, and waiters that they finished.
(SELECT count(pg_notify({jobs_channel}, ' cancel ' || o.id || ' ' || o.lease_id))
 FROM old AS o WHERE o.lease_id IS NOT NULL AND o.id IN (SELECT id FROM cancelled)) AS stopped,
(SELECT count(pg_notify({done_channel}, x.id::text)) FROM cancelled AS x) AS announced

-- name: retry
-- Run a failed or cancelled job again, now, with one more attempt allowed if it used them all.
UPDATE {schema}.job
SET state = 'retry', run_at = now(), finished_at = NULL,
    max_attempts = greatest(max_attempts, attempts + 1)
WHERE id = %(id)s AND state IN ('failed', 'cancelled')
RETURNING id, queue;

-- name: listen
-- Listen for wake-ups on the schema's channel (payload: a queue name, or ' cancel <id> <lease>').
LISTEN {channel};

-- name: listen_done
-- Listen for finished jobs (App.wait_for): payloads are space-separated job ids, or '' for "look".
LISTEN {done_listen};

-- name: set_progress
-- Record what running handlers last reported of their progress, each guarded by its lease.
UPDATE {schema}.job AS j
SET progress = v.progress::jsonb
FROM unnest(%(id)s::bigint[], %(lease_id)s::uuid[], %(progress)s::text[]) AS v(id, lease_id, progress)
WHERE j.id = v.id AND j.lease_id = v.lease_id;

-- name: notify
-- Wake the workers of the given queues.
SELECT pg_notify(%(channel)s, q) FROM unnest(%(queues)s::text[]) AS q;

-- name: notify_bare
-- notify, in libpq's own placeholders ($1 the channel, $2 a text array of queues): the
-- notifier thread sends it through the bare libpq call, without a cursor.
SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q;

-- name: counts
-- Jobs per queue and state, for status displays.
SELECT queue, state::text AS state, count(*) AS jobs
FROM {schema}.job
GROUP BY queue, state
ORDER BY queue, state;

-- name: worker_seen
-- Register a worker, or record that it is alive.
INSERT INTO {schema}.worker AS w (id, hostname, pid, queues, concurrency)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s)
ON CONFLICT (id) DO UPDATE SET last_seen_at = now();

-- name: worker_gone
-- Also drops the rows of workers not seen for 10 minutes (they died without saying so).
DELETE FROM {schema}.worker WHERE id = %(id)s OR last_seen_at < now() - interval '10 minutes';

-- name: workers
-- The registered worker processes, newest first, for status displays.
SELECT id, hostname, pid, queues, concurrency, started_at, last_seen_at,
       extract(epoch FROM now() - last_seen_at)::float8 AS seen_seconds_ago
FROM {schema}.worker
ORDER BY started_at DESC, id;

-- name: grants
-- Least privilege, run by the schema's owner after `pgqueue migrate` (and after any
-- migration that adds tables). Workers get DML on pgqueue's tables and nothing else;
-- producers may insert jobs and read back only what an insert returns and its unique-key
-- test needs (not the data, output or errors of any job); bulk inserts reserve ids; a
-- debounced enqueue replaces a waiting job's data and run time; throttled ones take keys; a
-- job with dependencies marks them (has_dependents) and links to them; publishing reads
-- subscriptions. The lifecycle triggers (dead letters, dependencies) run as the schema's owner.
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {worker}, {producer};
GRANT SELECT ON {schema}.{version_table} TO {worker}, {producer};
GRANT SELECT, UPDATE, DELETE ON {schema}.job TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.worker TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.queue TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.schedule TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.job_key TO {worker};
GRANT SELECT, INSERT, DELETE ON {schema}.flow_start TO {worker};
GRANT SELECT, INSERT, UPDATE ON {schema}.flow_cursor TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.dependency TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.subscription TO {worker};
GRANT INSERT ON {schema}.job TO {producer};
GRANT SELECT (id, uid, queue, unique_key, debounce_key, state) ON {schema}.job TO {producer};
GRANT UPDATE (data, run_at, has_dependents) ON {schema}.job TO {producer};
GRANT SELECT, INSERT, UPDATE ON {schema}.job_key TO {producer};
GRANT INSERT ON {schema}.dependency TO {producer};
GRANT SELECT ON {schema}.subscription TO {producer};
GRANT USAGE ON SEQUENCE {schema}.job_id_seq TO {producer};

-- name: configure_queue
-- Change a queue's settings (a row is made for it on first use); a NULL %(paused)s, or a false
-- set_* flag, leaves that setting as it is. Workers read them in every claim. Clearing the rate
-- limit drops the queue's log of recent starts.
WITH forgotten AS (
    DELETE FROM {schema}.flow_start
    WHERE kind = 'queue' AND name = %(name)s AND %(set_rate)s AND %(rate_limit)s::int IS NULL
)
INSERT INTO {schema}.queue AS q (name, paused, concurrency, rate_limit, rate_window)
VALUES (%(name)s, coalesce(%(paused)s::bool, false), %(concurrency)s::int, %(rate_limit)s::int,
        %(rate_window)s::float8)
ON CONFLICT (name) DO UPDATE
SET paused = coalesce(%(paused)s::bool, q.paused),
    concurrency = CASE WHEN %(set_concurrency)s THEN excluded.concurrency ELSE q.concurrency END,
    rate_limit = CASE WHEN %(set_rate)s THEN excluded.rate_limit ELSE q.rate_limit END,
    rate_window = CASE WHEN %(set_rate)s THEN excluded.rate_window ELSE q.rate_window END,
    updated_at = now()
RETURNING name, paused, concurrency, rate_limit, rate_window, updated_at;

-- name: queue_settings
-- The settings of every queue that has any, by name.
SELECT name, paused, concurrency, rate_limit, rate_window, updated_at FROM {schema}.queue ORDER BY name;

-- name: queue_overview
-- Per queue, for the dashboard and /metrics: jobs waiting to run now, scheduled for later
-- (created, run_at in the future), running, waiting to be retried, failed, cancelled, completed
-- in the last minute, and how long the oldest runnable job has waited (seconds; NULL if none).
SELECT queue,
       count(*) FILTER (WHERE state = 'created' AND run_at <= now()) AS waiting,
       count(*) FILTER (WHERE state = 'created' AND run_at > now()) AS scheduled,
       count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE state = 'retry') AS retrying,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'completed' AND finished_at > now() - interval '1 minute')
           AS completed_last_minute,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE state < 'active' AND run_at <= now()))::float8
           AS oldest_waiting_seconds
FROM {schema}.job
GROUP BY queue
ORDER BY queue;

-- name: throughput
-- Jobs completed and failed per minute over the last %(minutes)s minutes (the current one
-- included), oldest first, minutes without any included; %(queue)s NULL for every queue.
-- Reads finished rows through the job_finished index.
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1),
                           date_trunc('minute', now()), interval '1 minute') AS minute
), finished AS (
    SELECT date_trunc('minute', finished_at) AS minute,
           count(*) FILTER (WHERE state = 'completed') AS completed,
           count(*) FILTER (WHERE state = 'failed') AS failed
    FROM {schema}.job
    WHERE state > 'active'
      AND finished_at >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s)
    GROUP BY 1
)
SELECT m.minute, coalesce(f.completed, 0) AS completed, coalesce(f.failed, 0) AS failed
FROM minutes AS m LEFT JOIN finished AS f ON f.minute = m.minute
ORDER BY m.minute;

-- name: job_filter
-- A part of the statements below, not a statement: the rows matching the job filter (each
-- NULL parameter matches everything). older_than: created more than that many seconds ago.
(%(queue)s::text IS NULL OR queue = %(queue)s)
AND (%(type)s::text IS NULL OR type = %(type)s)
AND (%(state)s::text IS NULL OR state = %(state)s::{schema}.job_state)
AND (%(error)s::text IS NULL OR strpos(lower(error), lower(%(error)s)) > 0)
AND (%(older_than)s::float8 IS NULL OR created_at < now() - make_interval(secs => %(older_than)s))

-- name: list_jobs
-- One page of the jobs matching the filter, newest first, after the id %(before)s (keyset
-- paging: no OFFSET, so a page costs the same however deep it is). Errors keep their end (the message).
SELECT id, uid, type, queue, state::text AS state, priority, attempts, max_attempts, run_at,
       created_at, started_at, finished_at, duration, worker_id, right(error, 300) AS error
FROM {schema}.job
WHERE {job_filter}
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_jobs_newer
-- list_jobs backwards: the page of matching jobs just newer than the id %(after)s, oldest first.
SELECT id, uid, type, queue, state::text AS state, priority, attempts, max_attempts, run_at,
       created_at, started_at, finished_at, duration, worker_id, right(error, 300) AS error
FROM {schema}.job
WHERE {job_filter}
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- name: count_jobs
-- How many jobs match the filter and, unless %(within)s is NULL, are in one of those states
-- (shown before an action on all of them, which touches only jobs in the states it acts on).
SELECT count(*) AS jobs FROM {schema}.job
WHERE {job_filter} AND (%(within)s::text[] IS NULL OR state::text = ANY(%(within)s::text[]));

-- name: job_types
-- The queues and job types present, for the filters' choices.
SELECT DISTINCT queue, type FROM {schema}.job ORDER BY queue, type;

-- name: worker_list
-- The registered worker processes with the jobs each runs now, newest first.
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.started_at, w.last_seen_at,
       extract(epoch FROM now() - w.last_seen_at)::float8 AS seen_seconds_ago,
       coalesce(r.running, 0) AS running
FROM {schema}.worker AS w
LEFT JOIN (
    SELECT worker_id, count(*) AS running FROM {schema}.job WHERE state = 'active' GROUP BY worker_id
) AS r ON r.worker_id = w.id
ORDER BY w.started_at DESC, w.id;

-- name: delete_job
DELETE FROM {schema}.job WHERE id = %(id)s RETURNING id;

-- name: cancel_batch
-- Cancel up to %(batch)s unfinished jobs matching the filter, with ids above %(after)s, in
-- id order. One batch per statement keeps each one's row locks short; rows a worker holds
-- right now are skipped (the caller moves on past them). A running job's worker is fenced out.
WITH old AS MATERIALIZED (
    SELECT id, lease_id FROM {schema}.job
    WHERE {job_filter} AND state < 'completed' AND id > %(after)s
    ORDER BY id LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), cancelled AS (
    UPDATE {schema}.job
    SET state = 'cancelled', finished_at = now(), lease_id = NULL, lease_expires_at = NULL
    WHERE id = ANY(ARRAY(SELECT id FROM old))
    RETURNING id, queue
)
SELECT c.id, c.queue, {cancel_notices}
FROM cancelled AS c;

-- name: retry_batch
-- Run again, now, up to %(batch)s failed or cancelled jobs matching the filter, with ids
-- above %(after)s (as the retry statement does for one job).
UPDATE {schema}.job
SET state = 'retry', run_at = now(), finished_at = NULL,
    max_attempts = greatest(max_attempts, attempts + 1)
WHERE id = ANY(ARRAY(
    SELECT id FROM {schema}.job
    WHERE {job_filter} AND state IN ('failed', 'cancelled') AND id > %(after)s
    ORDER BY id LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
))
RETURNING id, queue;

-- name: delete_batch
-- Delete up to %(batch)s jobs matching the filter, with ids above %(after)s. A running job's
-- worker finds its row gone and records nothing.
DELETE FROM {schema}.job
WHERE id = ANY(ARRAY(
    SELECT id FROM {schema}.job
    WHERE {job_filter} AND id > %(after)s
    ORDER BY id LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
))
RETURNING id, queue;

-- name: unfinished_jobs
-- Jobs that wait or run, oldest first: what a test's assert_enqueued looks through.
SELECT * FROM {schema}.job WHERE state < 'completed' ORDER BY id LIMIT %(limit)s;

-- name: advance_run_at
-- Move every waiting job's run_at %(seconds)s seconds earlier: a test's way to let time pass
-- for delayed jobs and retries, leaving the database clock (which decides) alone.
UPDATE {schema}.job SET run_at = run_at - make_interval(secs => %(seconds)s)
WHERE state < 'active'
RETURNING id;

-- name: health_server
-- pgqueue doctor: the server settings it checks, the database's clock, and this session.
SELECT current_setting('autovacuum') = 'on' AS autovacuum,
       now() AS db_now, clock_timestamp() AS db_clock,
       pg_notification_queue_usage()::float8 AS notify_usage,
       current_user AS role, pg_backend_pid() AS pid,
       current_setting('server_version') AS server_version;

-- name: health_tables
-- pgqueue doctor: each table of pgqueue's schema, its autovacuum reloption, dead tuples, and the
-- privileges the connecting role has on it.
SELECT c.relname AS name,
       coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'autovacuum_enabled'), 'true') AS autovacuum_enabled,
       coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       has_table_privilege(c.oid, 'SELECT') AS can_select,
       has_table_privilege(c.oid, 'INSERT') AS can_insert,
       has_table_privilege(c.oid, 'UPDATE') AS can_update,
       has_table_privilege(c.oid, 'DELETE') AS can_delete
FROM pg_class AS c
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p')
ORDER BY c.relname;

-- name: health_idle_in_transaction
-- pgqueue doctor: sessions idle in an open transaction for more than %(seconds)s (they hold the
-- xmin horizon, and any row locks they took). Their start is visible to privileged roles only.
SELECT pid, coalesce(usename, '?') AS role, coalesce(nullif(application_name, ''), '?') AS application,
       extract(epoch FROM now() - state_change)::float8 AS idle_for,
       extract(epoch FROM now() - xact_start)::float8 AS open_for
FROM pg_stat_activity
WHERE state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid() AND datname = current_database()
  AND state_change < now() - make_interval(secs => %(seconds)s)
ORDER BY state_change;

-- name: health_stuck_jobs
-- pgqueue doctor: active jobs whose lease expired more than %(seconds)s ago (no worker rescued them).
SELECT count(*) AS jobs, min(id) AS first_id,
       extract(epoch FROM now() - min(lease_expires_at))::float8 AS oldest_expired_for
FROM {schema}.job
WHERE state = 'active' AND lease_expires_at < now() - make_interval(secs => %(seconds)s);

-- name: health_schema_usage
-- pgqueue doctor: may the connecting role use pgqueue's schema?
SELECT has_schema_privilege(%(schema)s, 'USAGE') AS usage;

-- name: health_xmin_holders
-- pgqueue doctor: xmin_holders, limited to what holds back vacuum in this database: its own
-- sessions and prepared transactions, physical replication slots and its logical ones.
SELECT 'backend ' || pid || ' (' || coalesce(usename, '?') || ', '
           || coalesce(nullif(application_name, ''), '?') || ', ' || state || ')' AS holder,
       backend_xmin::text AS xmin,
       extract(epoch FROM now() - xact_start)::float8 AS held_for
FROM pg_stat_activity
WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid() AND datname = current_database()
UNION ALL
SELECT 'replication slot ' || slot_name, coalesce(xmin, catalog_xmin)::text, NULL
FROM pg_replication_slots
WHERE (xmin IS NOT NULL OR catalog_xmin IS NOT NULL)
  AND (database IS NULL OR database = current_database())
UNION ALL
SELECT 'prepared transaction ' || gid, transaction::text, extract(epoch FROM now() - prepared)::float8
FROM pg_prepared_xacts
WHERE database = current_database();

-- name: queue_activity
-- pgqueue status: per queue, how long the oldest runnable job has waited, and jobs completed
-- per minute over the last %(minutes)s minutes (completed jobs pruned sooner are not counted).
SELECT queue,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE state < 'active' AND run_at <= now()))::float8
           AS oldest_waiting,
       (count(*) FILTER (WHERE state = 'completed'
                           AND finished_at > now() - make_interval(mins => %(minutes)s)))::float8
           / %(minutes)s AS completed_per_minute
FROM {schema}.job
GROUP BY queue
ORDER BY queue;

-- name: upsert_schedule
-- Add a schedule, or replace the one of that name (keeping its last tick, so that a worker
-- restart or a redeploy does not enqueue a tick twice).
INSERT INTO {schema}.schedule AS s (name, task, data, cron, every, tz, catch_up)
VALUES (%(name)s, %(task)s, %(data)s::jsonb, %(cron)s, %(every)s, %(tz)s, %(catch_up)s)
ON CONFLICT (name) DO UPDATE
SET task = excluded.task, data = excluded.data, cron = excluded.cron, every = excluded.every,
    tz = excluded.tz, catch_up = excluded.catch_up;

-- name: delete_schedule
DELETE FROM {schema}.schedule WHERE name = %(name)s RETURNING name;

-- name: list_schedules
-- Every schedule, by name, with the database's clock: the scheduler decides what is due by it.
-- Without schedules, one row of NULLs but the clock.
SELECT s.name, s.task, s.data, s.cron, s.every, s.tz, s.catch_up, s.last_tick, s.created_at, now() AS now
FROM (SELECT 1) AS clock
LEFT JOIN {schema}.schedule AS s ON true
ORDER BY s.name;

-- name: advance_schedule
-- Move a schedule's last tick forward to %(tick)s, in the transaction that enqueues the jobs of
-- its ticks; returns the tick it had before. The row lock makes racing workers wait for each
-- other; the loser re-reads the row after the winner commits and matches nothing (no row).
UPDATE {schema}.schedule AS s
SET last_tick = %(tick)s
FROM (SELECT name, last_tick FROM {schema}.schedule WHERE name = %(name)s FOR UPDATE) AS before
WHERE s.name = before.name AND (s.last_tick IS NULL OR s.last_tick < %(tick)s)
RETURNING before.last_tick AS previous;

-- name: vacuum_job_table
-- The vacuum duty: the job table's live and dead tuples (as the statistics last saw them), its
-- last vacuum, and whether this role may vacuum it (may_maintain).
SELECT coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       {may_maintain} AS may_vacuum
FROM pg_class AS c
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relname = 'job';

-- name: may_maintain
-- A part of vacuum_job_table and job_table_unanalyzed, not a statement: whether this role may
-- vacuum or analyze the table "c" (pg_class): its owner, the database's owner, or, from
-- PostgreSQL 17, a role with MAINTAIN on it; superusers always.
(pg_has_role(c.relowner, 'USAGE')
 OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
 OR CASE WHEN current_setting('server_version_num')::int >= 170000
         THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END)

-- name: job_table_unanalyzed
-- "unanalyzed": the job table holds jobs but PostgreSQL has no statistics on its columns (never
-- analyzed with rows in it: a new installation before autoanalyze, or autovacuum off); without
-- them the planner guesses that a queue holds a few jobs, and past about 100,000 plans each claim
-- as a bitmap scan and a sort of every waiting job. "analyzed": it has them. "may_analyze":
-- whether this role may analyze it (may_maintain).
SELECT NOT s.analyzed AND EXISTS (SELECT FROM {schema}.job) AS unanalyzed, s.analyzed,
       {may_maintain} AS may_analyze
FROM pg_class AS c,
     LATERAL (SELECT EXISTS (SELECT FROM pg_stats WHERE schemaname = %(schema)s AND tablename = 'job'
                             AND attname = 'queue') AS analyzed) AS s
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relname = 'job';

-- name: job_table_size
-- The job table's size in bytes, for the worker's watch on its plans (PlanWatch).
SELECT pg_relation_size(c.oid) AS size
FROM pg_class AS c
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relname = 'job';

-- name: discard_plans
-- Drop the plans of this connection's prepared statements (not the statements): each is planned
-- again at its next execution, for the tables as they are now (see Replanning).
DISCARD PLANS;

-- name: analyze_job
-- Statistics for the job table (only its owner may; SKIP_LOCKED: not while another session
-- analyzes or vacuums it).
ANALYZE (SKIP_LOCKED) {schema}.job;

-- name: vacuum_lock
-- The vacuum duty: one worker of the cluster at a time. A session-level lock, because VACUUM
-- cannot run inside a transaction; it is taken on a dedicated direct connection, never through a
-- pooler in transaction mode, and released right after (or with the session).
SELECT pg_try_advisory_lock(%(lock_key)s) AS locked;

-- name: vacuum_unlock
SELECT pg_advisory_unlock(%(lock_key)s) AS unlocked;

-- name: vacuum_job
-- The vacuum duty: reclaim the job table's dead rows and refresh its statistics (outside any
-- transaction: on an autocommit connection).
VACUUM (ANALYZE) {schema}.job;

-- name: insert_jobs_lifecycle
-- insert_jobs for jobs with a dead-letter queue or dependencies (%(depends_on)s: one array
-- literal of job ids per job, or NULL). Every dependency row is marked has_dependents, which
-- takes its row lock: a dependency finishing concurrently either committed first (its state
-- here is final) or waits for this transaction and then finds the links (see the trigger
-- job_finished_dependency). A job with a dependency that failed, was cancelled or does not
-- exist is inserted cancelled, with the cause as its error; one with unfinished dependencies
-- waits with run_at 9999-12-31 (never runnable; 'infinity' would not load into a Python datetime) until the last completes; the others are inserted as usual.
-- Ids in input order (NULL where a unique key was taken).
WITH v AS MATERIALIZED (
    SELECT nextval('{schema}.job_id_seq') AS id, v.*
    FROM unnest(%(type)s::text[], %(queue)s::text[], %(data)s::text[], %(priority)s::int[],
                %(max_attempts)s::int[], %(run_at)s::timestamptz[], %(delay)s::float8[],
                %(retry_delay)s::float8[], %(retry_backoff)s::bool[], %(retry_delay_max)s::float8[],
                %(timeout)s::float8[], %(unique_key)s::text[], %(concurrency_key)s::text[],
                %(dead_letter)s::text[], %(depends_on)s::text[]) WITH ORDINALITY
         AS v(type, queue, data, priority, max_attempts, run_at, delay, retry_delay, retry_backoff,
              retry_delay_max, timeout, unique_key, concurrency_key, dead_letter, depends_on, n)
), wanted AS (
    SELECT DISTINCT v.id AS job_id, d.id AS depends_on
    FROM v CROSS JOIN LATERAL unnest(v.depends_on::bigint[]) AS d(id)
), deps AS (
    UPDATE {schema}.job AS j SET has_dependents = true
    WHERE j.id = ANY(ARRAY(SELECT DISTINCT depends_on FROM wanted))
    RETURNING j.id, j.state
), judged AS (
    SELECT w.job_id,
           count(*) FILTER (WHERE d.state < 'completed') AS pending,
           min(CASE WHEN d.id IS NULL THEN 'dependency ' || w.depends_on || ' does not exist'
                    WHEN d.state IN ('failed', 'cancelled') THEN 'dependency ' || d.id || ' ' || d.state
               END) AS cause
    FROM wanted AS w LEFT JOIN deps AS d ON d.id = w.depends_on
    GROUP BY w.job_id
), inserted AS (
    INSERT INTO {schema}.job AS j (id, uid, type, queue, data, priority, max_attempts, run_at, retry_delay,
                                   retry_backoff, retry_delay_max, timeout, unique_key, trace,
                                   concurrency_key, dead_letter, state, finished_at, error,
                                   dependencies_left)
    OVERRIDING SYSTEM VALUE
    SELECT v.id, {schema}.job_uid(v.id), v.type, v.queue, v.data::jsonb, v.priority, v.max_attempts,
           CASE WHEN g.pending > 0 AND g.cause IS NULL THEN '9999-12-31 00:00:00+00'::timestamptz
                ELSE coalesce(v.run_at, now() + make_interval(secs => coalesce(v.delay, 0))) END,
           v.retry_delay, v.retry_backoff, v.retry_delay_max, v.timeout, v.unique_key,
           %(trace)s::jsonb, v.concurrency_key, v.dead_letter,
           CASE WHEN g.cause IS NULL THEN 'created' ELSE 'cancelled' END::{schema}.job_state,
           CASE WHEN g.cause IS NOT NULL THEN now() END,
           g.cause,
           CASE WHEN g.cause IS NULL THEN coalesce(g.pending, 0) ELSE 0 END
    FROM v LEFT JOIN judged AS g ON g.job_id = v.id
    ORDER BY v.n
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state < 'completed' DO NOTHING
    RETURNING j.id, j.uid, j.queue, j.state
), links AS (
    INSERT INTO {schema}.dependency (depends_on, job_id)
    SELECT w.depends_on, w.job_id
    FROM wanted AS w
    JOIN inserted AS i ON i.id = w.job_id
    JOIN deps AS d ON d.id = w.depends_on
    WHERE i.state = 'created' AND d.state < 'completed'
), woken AS (
    SELECT pg_notify(%(channel)s, q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'created') AS q
    WHERE %(notify)s
)
SELECT i.id, i.uid, (SELECT count(*) FROM woken) AS woken
FROM v LEFT JOIN inserted AS i ON i.id = v.id
ORDER BY v.n;

-- name: publish
-- Enqueue one job per task subscribed to the event %(event)s, with the subscription's settings,
-- and with %(notify)s wake their queues on commit. Ids in task name order.
WITH inserted AS (
    INSERT INTO {schema}.job (id, uid, type, queue, data, priority, max_attempts, dead_letter)
    OVERRIDING SYSTEM VALUE
    SELECT {new_id_uid}, s.task, s.queue, %(data)s::jsonb, s.priority, s.max_attempts, s.dead_letter
    FROM {schema}.subscription AS s
    WHERE s.event = %(event)s
    ORDER BY s.task
    RETURNING id, uid, queue
), woken AS (
    SELECT pg_notify(%(channel)s, q.queue)
    FROM (SELECT DISTINCT queue FROM inserted) AS q
    WHERE %(notify)s
)
SELECT id, uid, (SELECT count(*) FROM woken) AS woken FROM inserted ORDER BY id;

-- name: subscribe
-- Subscribe a task to an event, or update the settings of its subscription.
INSERT INTO {schema}.subscription AS s (event, task, queue, priority, max_attempts, dead_letter)
VALUES (%(event)s, %(task)s, %(queue)s, %(priority)s, %(max_attempts)s, %(dead_letter)s)
ON CONFLICT (event, task) DO UPDATE
SET queue = excluded.queue, priority = excluded.priority, max_attempts = excluded.max_attempts,
    dead_letter = excluded.dead_letter;

-- name: unsubscribe
-- Remove one subscription, or with %(task)s NULL every subscription to the event.
DELETE FROM {schema}.subscription
WHERE event = %(event)s AND (%(task)s::text IS NULL OR task = %(task)s)
RETURNING task;

-- name: subscriptions
-- Every subscription, by event and task.
SELECT event, task, queue, priority, max_attempts, dead_letter, created_at
FROM {schema}.subscription
ORDER BY event, task;

-- name: redrive_batch
-- Put up to %(batch)s dead letters (copies of failed jobs: origin_queue set) that wait on the
-- queue of the filter (a copy a worker is running is left alone) and match the filter, with ids above %(after)s, back on their
-- original queue, to run now with fresh attempts. Should one fail for good again, it is copied
-- back to this dead-letter queue.
UPDATE {schema}.job
SET queue = origin_queue, dead_letter = queue, origin_queue = NULL, state = 'created',
    attempts = 0, run_at = now(), started_at = NULL, finished_at = NULL, error = NULL,
    worker_id = NULL, lease_id = NULL, lease_expires_at = NULL
WHERE id = ANY(ARRAY(
    SELECT id FROM {schema}.job
    WHERE {job_filter} AND origin_queue IS NOT NULL AND state <> 'active' AND id > %(after)s
    ORDER BY id LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
))
RETURNING id, queue;

-- name: count_dead_letters
-- How many dead letters match the filter (what a redrive would move).
SELECT count(*) AS jobs FROM {schema}.job
WHERE {job_filter} AND origin_queue IS NOT NULL AND state <> 'active';

-- name: job_history
-- One page of the jobs matching the filter, created at or after %(since)s (NULL: any time),
-- oldest first, after the id %(after)s: keyset paging on the primary key, no OFFSET, so a page
-- costs the same however deep it is and rows added or pruned meanwhile shift no page.
SELECT * FROM {schema}.job
WHERE {job_filter}
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- name: set_queue_retention
-- Set how long a queue's finished jobs are kept (seconds; NULL: the workers' defaults).
INSERT INTO {schema}.queue AS q (name, completed_retention, failed_retention)
VALUES (%(name)s, %(completed)s, %(failed)s)
ON CONFLICT (name) DO UPDATE
SET completed_retention = CASE WHEN %(set_completed)s THEN excluded.completed_retention
                               ELSE q.completed_retention END,
    failed_retention = CASE WHEN %(set_failed)s THEN excluded.failed_retention ELSE q.failed_retention END,
    updated_at = now()
RETURNING name, paused, completed_retention, failed_retention, updated_at;

-- name: dead_letter_overview
-- The dead letters waiting, per dead-letter queue, queue they failed on and type, for the
-- dashboard: how many, and when the oldest and newest were dead-lettered.
SELECT queue, origin_queue, type, count(*) AS jobs, min(created_at) AS oldest, max(created_at) AS newest
FROM {schema}.job
WHERE origin_queue IS NOT NULL AND state <> 'active'
GROUP BY queue, origin_queue, type
ORDER BY queue, origin_queue, type;
