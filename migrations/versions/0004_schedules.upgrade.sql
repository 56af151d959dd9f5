-- Periodic jobs: a cron expression in a time zone, or a period in seconds. last_tick, the
-- latest tick enqueued (UTC), is advanced in the transaction that enqueues its job, under a
-- guard that only moves it forward: of workers racing for one tick, one enqueues it.
CREATE TABLE {schema}.schedule (
    name       text PRIMARY KEY,
    task       text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}',
    cron       text,
    every      double precision CHECK (every > 0),
    tz         text NOT NULL DEFAULT 'UTC',
    catch_up   boolean NOT NULL DEFAULT false,
    last_tick  timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_cron_or_every CHECK ((cron IS NOT NULL) <> (every IS NOT NULL))
);
