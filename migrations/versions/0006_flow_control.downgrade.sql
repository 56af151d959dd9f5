DROP TABLE {schema}.flow_cursor;
DROP INDEX {schema}.job_fair;
DROP TABLE {schema}.flow_start;
ALTER TABLE {schema}.queue
    DROP CONSTRAINT queue_rate_complete,
    DROP COLUMN rate_window,
    DROP COLUMN rate_limit,
    DROP COLUMN concurrency;
ALTER TABLE {schema}.job DROP COLUMN concurrency_key;
