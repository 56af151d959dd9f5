-- Dead letters: dead_letter, on a job, is the queue it is copied to when it fails for good;
-- on the copy, origin_id and origin_queue say where it came from (redrive puts it back there).
-- Dependencies: a job enqueued with depends_on waits with run_at 9999-12-31 (never claimable)
-- and dependencies_left counting its unfinished dependencies; has_dependents marks the jobs
-- that others wait for. The triggers below act only on rows with those set: an ordinary job's
-- update pays one cheap WHEN test.
ALTER TABLE {schema}.job
    ADD COLUMN dead_letter text,
    ADD COLUMN origin_id bigint,
    ADD COLUMN origin_queue text,
    ADD COLUMN has_dependents boolean NOT NULL DEFAULT false,
    ADD COLUMN dependencies_left integer NOT NULL DEFAULT 0;

-- Dead letters by queue, for redrive and the dashboard: only the copies are in it.
CREATE INDEX job_dead_letters ON {schema}.job (queue, id) WHERE origin_queue IS NOT NULL;

-- Which job waits for which: a row per link not yet resolved, removed when the dependency finishes.
CREATE TABLE {schema}.dependency (
    depends_on bigint NOT NULL,
    job_id     bigint NOT NULL,
    PRIMARY KEY (depends_on, job_id)
);

-- Pub/sub: publishing an event enqueues one job per subscribed task, with these settings.
CREATE TABLE {schema}.subscription (
    event        text NOT NULL,
    task         text NOT NULL,
    queue        text NOT NULL,
    priority     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    dead_letter  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event, task)
);

-- Per-queue retention of finished jobs, in seconds; NULL: the workers' defaults.
ALTER TABLE {schema}.queue
    ADD COLUMN completed_retention double precision CHECK (completed_retention >= 0),
    ADD COLUMN failed_retention double precision CHECK (failed_retention >= 0);

-- A job that failed for good is copied to its dead-letter queue, in the transaction that failed
-- it, whichever statement did (the worker's, a handler's own, the rescue of an expired lease).
-- The copy waits there, with the data, errors and attempts of the original, until redriven.
CREATE FUNCTION {schema}.dead_letter() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO {schema}.job (type, queue, data, priority, attempts, max_attempts, retry_delay,
                              retry_backoff, retry_delay_max, timeout, error, errors, trace,
                              origin_id, origin_queue)
    VALUES (NEW.type, NEW.dead_letter, NEW.data, NEW.priority, NEW.attempts, NEW.max_attempts,
            NEW.retry_delay, NEW.retry_backoff, NEW.retry_delay_max, NEW.timeout, NEW.error,
            NEW.errors, NEW.trace, NEW.id, NEW.queue);
    RETURN NULL;
END
$$;

CREATE TRIGGER job_dead_letter AFTER UPDATE OF state ON {schema}.job
FOR EACH ROW WHEN (NEW.dead_letter IS NOT NULL AND NEW.state = 'failed' AND OLD.state < 'completed')
EXECUTE FUNCTION {schema}.dead_letter();

-- A job others depend on finished (or was deleted), in the transaction that finished it:
-- completed, it releases the dependents it was the last unfinished dependency of (they may run
-- now, and their queues are woken); failed, cancelled or deleted, it cancels them, with the
-- cause in their error, and their dependents after them, level by level in a loop (not by
-- recursion: a chain of any length; the cancels it makes are marked, so that this trigger,
-- fired again by them, leaves them to the loop). The dependents' row locks order concurrent
-- finishers: the last of a job's dependencies to commit releases it.
CREATE FUNCTION {schema}.resolve_dependents() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    finished bigint;
    cause text;
    frontier bigint[];
    level integer := 0;
    touched bigint;
BEGIN
    IF current_setting('pgqueue_lifecycle.cascading', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        finished := OLD.id;
        cause := 'dependency ' || OLD.id || ' was deleted';
    ELSE
        finished := NEW.id;
        cause := 'dependency ' || NEW.id || ' ' || NEW.state;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.state = 'completed' THEN
        WITH links AS (
            DELETE FROM {schema}.dependency WHERE depends_on = finished RETURNING job_id
        ), released AS (
            UPDATE {schema}.job AS j
            SET dependencies_left = j.dependencies_left - 1,
                run_at = CASE WHEN j.dependencies_left = 1 THEN now() ELSE j.run_at END
            FROM links
            WHERE j.id = links.job_id AND j.state = 'created' AND j.dependencies_left > 0
            RETURNING j.queue, j.dependencies_left
        )
        SELECT count(pg_notify(TG_TABLE_SCHEMA || '_jobs', q.queue)) INTO touched
        FROM (SELECT DISTINCT queue FROM released WHERE dependencies_left = 0) AS q;
        RETURN NULL;
    END IF;
    PERFORM set_config('pgqueue_lifecycle.cascading', 'on', true);
    frontier := ARRAY[finished];
    LOOP
        WITH links AS (
            DELETE FROM {schema}.dependency WHERE depends_on = ANY(frontier) RETURNING depends_on, job_id
        ), firsts AS (
            SELECT DISTINCT ON (job_id) job_id, depends_on FROM links ORDER BY job_id, depends_on
        ), cancelled AS (
            UPDATE {schema}.job AS j
            SET state = 'cancelled', finished_at = now(), lease_id = NULL, lease_expires_at = NULL,
                error = CASE WHEN level = 0 THEN cause
                             ELSE 'dependency ' || f.depends_on || ' cancelled; caused by ' || cause END
            FROM firsts AS f
            WHERE j.id = f.job_id AND j.state < 'completed'
            RETURNING j.id, pg_notify(TG_TABLE_SCHEMA || '_done', j.id::text)
        )
        SELECT array_agg(id) INTO frontier FROM cancelled;
        EXIT WHEN frontier IS NULL;
        level := level + 1;
    END LOOP;
    PERFORM set_config('pgqueue_lifecycle.cascading', '', true);
    RETURN NULL;
END
$$;

CREATE TRIGGER job_finished_dependency AFTER UPDATE OF state ON {schema}.job
FOR EACH ROW WHEN (NEW.has_dependents AND NEW.state > 'active' AND OLD.state < 'completed')
EXECUTE FUNCTION {schema}.resolve_dependents();

CREATE TRIGGER job_deleted_dependency AFTER DELETE ON {schema}.job
FOR EACH ROW WHEN (OLD.has_dependents AND OLD.state < 'completed')
EXECUTE FUNCTION {schema}.resolve_dependents();
