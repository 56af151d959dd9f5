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

-- name: insert_job
-- Insert one job without a unique key: the common enqueue, one plain INSERT. (A job without
-- a key can never conflict, and ON CONFLICT would cost a speculative insertion anyway.)
-- Positional, in this order: data, type, queue, priority, max_attempts, run_at, delay,
-- retry_delay, retry_backoff, retry_delay_max, timeout.
INSERT INTO {schema}.job (data, type, queue, priority, max_attempts, run_at,
                          retry_delay, retry_backoff, retry_delay_max, timeout)
VALUES (%s::jsonb, %s, %s, %s, %s,
        coalesce(%s::timestamptz, now() + make_interval(secs => coalesce(%s::float8, 0))),
        %s, %s, %s, %s)
RETURNING id;

-- name: insert_job_notify
-- insert_job, and wake the job's queue on commit: for enqueues in the caller's transaction.
-- Positional, as insert_job, then the channel.
WITH inserted AS (
    INSERT INTO {schema}.job (data, type, queue, priority, max_attempts, run_at,
                              retry_delay, retry_backoff, retry_delay_max, timeout)
    VALUES (%s::jsonb, %s, %s, %s, %s,
            coalesce(%s::timestamptz, now() + make_interval(secs => coalesce(%s::float8, 0))),
            %s, %s, %s, %s)
    RETURNING id, queue
)
SELECT id, pg_notify(%s, queue) FROM inserted;

-- name: insert_unique_job
-- Insert one job with a unique key and, with %(notify)s, wake its queue's workers on commit.
-- Skipped (no row) when its unique_key matches a job that still waits or runs.
WITH inserted AS (
    INSERT INTO {schema}.job (type, queue, data, priority, max_attempts, run_at,
                              retry_delay, retry_backoff, retry_delay_max, timeout, unique_key)
    VALUES (%(type)s, %(queue)s, %(data)s::jsonb, %(priority)s, %(max_attempts)s,
            coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s::float8, 0))),
            %(retry_delay)s, %(retry_backoff)s, %(retry_delay_max)s, %(timeout)s, %(unique_key)s)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state < 'completed' DO NOTHING
    RETURNING id, queue
)
SELECT id, (SELECT count(pg_notify(%(channel)s, queue)) FROM inserted WHERE %(notify)s) AS woken
FROM inserted;

-- name: insert_job_traced
-- Insert one job with the trace context of its enqueue (%(trace)s, W3C headers as JSON) and,
-- with %(notify)s, wake its queue's workers on commit. Used only when tracing is on. Skipped
-- (no row) when its unique_key matches a job that still waits or runs.
WITH inserted AS (
    INSERT INTO {schema}.job (type, queue, data, priority, max_attempts, run_at,
                              retry_delay, retry_backoff, retry_delay_max, timeout, unique_key, trace)
    VALUES (%(type)s, %(queue)s, %(data)s::jsonb, %(priority)s, %(max_attempts)s,
            coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s::float8, 0))),
            %(retry_delay)s, %(retry_backoff)s, %(retry_delay_max)s, %(timeout)s, %(unique_key)s,
            %(trace)s::jsonb)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state < 'completed' DO NOTHING
    RETURNING id, queue
)
SELECT id, (SELECT count(pg_notify(%(channel)s, queue)) FROM inserted WHERE %(notify)s) AS woken
FROM inserted;

-- name: reserve_job_ids
-- Take %(n)s ids from the job sequence, and the clock that delays count from, for a COPY.
SELECT now() AS now,
       array(SELECT nextval('{schema}.job_id_seq') FROM generate_series(1, %(n)s)) AS ids;

-- name: copy_jobs
-- Bulk load jobs whose ids were reserved (COPY writes given identity values).
COPY {schema}.job (id, data, type, queue, priority, max_attempts, run_at,
                   retry_delay, retry_backoff, retry_delay_max, timeout) FROM STDIN;

-- name: copy_jobs_now
-- copy_jobs for jobs that may run at once: run_at takes its default, now(), which spares
-- PostgreSQL parsing a timestamp per row (a fifth of the COPY's server time).
COPY {schema}.job (id, data, type, queue, priority, max_attempts,
                   retry_delay, retry_backoff, retry_delay_max, timeout) FROM STDIN;

-- name: insert_jobs
-- Insert one row per element of the parallel arrays, in one round trip, and wake the
-- workers of each queue once (delivered on commit; identical notifications in one
-- transaction are merged by PostgreSQL). A job whose unique_key matches a job that
-- still waits or runs is skipped and returns no row. %(trace)s: the enqueue's trace
-- context for every row (NULL unless tracing is on).
WITH inserted AS (
    INSERT INTO {schema}.job AS j (type, queue, data, priority, max_attempts, run_at,
                                   retry_delay, retry_backoff, retry_delay_max, timeout, unique_key, trace)
    SELECT v.type, v.queue, v.data::jsonb, v.priority, v.max_attempts,
           coalesce(v.run_at, now() + make_interval(secs => coalesce(v.delay, 0))),
           v.retry_delay, v.retry_backoff, v.retry_delay_max, v.timeout, v.unique_key, %(trace)s::jsonb
    FROM unnest(%(type)s::text[], %(queue)s::text[], %(data)s::text[], %(priority)s::int[],
                %(max_attempts)s::int[], %(run_at)s::timestamptz[], %(delay)s::float8[],
                %(retry_delay)s::float8[], %(retry_backoff)s::bool[], %(retry_delay_max)s::float8[],
                %(timeout)s::float8[], %(unique_key)s::text[])
         AS v(type, queue, data, priority, max_attempts, run_at, delay,
              retry_delay, retry_backoff, retry_delay_max, timeout, unique_key)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state < 'completed' DO NOTHING
    RETURNING j.id, j.queue, j.unique_key
), woken AS (
    SELECT pg_notify(%(channel)s, q.queue)
    FROM (SELECT DISTINCT queue FROM inserted) AS q
    WHERE %(notify)s
)
SELECT i.id, i.unique_key, (SELECT count(*) FROM woken) AS woken
FROM inserted AS i
ORDER BY i.id;

-- name: get_job
SELECT * FROM {schema}.job WHERE id = %(id)s;

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
SELECT NULL::bigint[] AS completed, NULL::json AS failed, (SELECT json_agg(claimed ORDER BY priority DESC, id) FROM claimed) AS claimed;

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
SELECT NULL::bigint[] AS completed, NULL::json AS failed, (SELECT json_agg(claimed ORDER BY priority DESC, id) FROM claimed) AS claimed;

-- name: claim_one_candidates
-- A part of exchange_one and claim_one, not a statement: up to %(limit)s runnable jobs of the
-- queue %(queue)s, walking the fetch index in its own order, skipping rows other workers hold.
SELECT id FROM {schema}.job
WHERE queue = %(queue)s AND state < 'active' AND run_at <= now()
  AND NOT EXISTS (SELECT FROM {schema}.queue AS p WHERE p.name = %(queue)s AND p.paused)
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
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
       (SELECT json_agg(claimed ORDER BY priority DESC, id) FROM claimed) AS claimed,
       (SELECT pg_notify({done_channel}, {finished_payload}) FROM finished
        HAVING count(*) > 0 AND NOT {waiters_absent}) AS announced

-- name: claim_candidates
-- A part of exchange and claim, not a statement: up to %(limit)s runnable jobs of the queue
-- q.name, walking the fetch index in its own order (priority DESC, run_at, id), skipping rows
-- other workers hold and types in %(full)s.
SELECT id, type, priority, run_at
FROM {schema}.job
WHERE queue = q.name AND state < 'active' AND run_at <= now()
  AND type <> ALL(%(full)s::text[])
  AND NOT EXISTS (SELECT FROM {schema}.queue AS p WHERE p.name = q.name AND p.paused)
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: claim_picked
-- A part of exchange and claim, not a statement: claim the jobs of the CTE "picked": count
-- an attempt, give each a fresh lease; return what the worker needs to run them. The ids go
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
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.type, j.queue, j.data, j.priority, j.attempts, j.max_attempts,
          j.retry_delay, j.retry_backoff, j.retry_delay_max, j.timeout, j.lease_id, j.trace

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
-- Delete up to %(batch)s finished jobs older than their retention.
-- (= ANY(ARRAY(...)) keeps the delete on the primary key; IN (...) planned a hash
-- semi-join over the whole table.)
DELETE FROM {schema}.job
WHERE id = ANY(ARRAY(
    SELECT id FROM {schema}.job
    WHERE (state = 'completed' AND finished_at < now() - make_interval(secs => %(completed_seconds)s))
       OR (state IN ('failed', 'cancelled') AND finished_at < now() - make_interval(secs => %(failed_seconds)s))
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
-- test needs (not the data, output or errors of any job); bulk inserts reserve ids.
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {worker}, {producer};
GRANT SELECT ON {schema}.{version_table} TO {worker}, {producer};
GRANT SELECT, UPDATE, DELETE ON {schema}.job TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.worker TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.queue TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.schedule TO {worker};
GRANT INSERT ON {schema}.job TO {producer};
GRANT SELECT (id, queue, unique_key, state) ON {schema}.job TO {producer};
GRANT USAGE ON SEQUENCE {schema}.job_id_seq TO {producer};

-- name: pause_queue
-- Pause or resume a queue (a row is made for it on first use). Workers check it in every claim.
INSERT INTO {schema}.queue AS q (name, paused) VALUES (%(name)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
RETURNING name, paused, updated_at;

-- name: queue_settings
-- The settings of every queue that has any, by name.
SELECT name, paused, updated_at FROM {schema}.queue ORDER BY name;

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
SELECT id, type, queue, state::text AS state, priority, attempts, max_attempts, run_at,
       created_at, started_at, finished_at, duration, worker_id, right(error, 300) AS error
FROM {schema}.job
WHERE {job_filter}
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_jobs_newer
-- list_jobs backwards: the page of matching jobs just newer than the id %(after)s, oldest first.
SELECT id, type, queue, state::text AS state, priority, attempts, max_attempts, run_at,
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
-- last vacuum, and whether this role may vacuum it (its owner, the database's owner, or, from
-- PostgreSQL 17, a role with MAINTAIN on it; superusers always).
SELECT coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       (pg_has_role(c.relowner, 'USAGE')
        OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
        OR CASE WHEN current_setting('server_version_num')::int >= 170000
                THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END) AS may_vacuum
FROM pg_class AS c
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relname = 'job';

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
