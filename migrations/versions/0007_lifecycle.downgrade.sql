DROP TRIGGER job_deleted_dependency ON {schema}.job;
DROP TRIGGER job_finished_dependency ON {schema}.job;
DROP TRIGGER job_dead_letter ON {schema}.job;
DROP FUNCTION {schema}.resolve_dependents();
DROP FUNCTION {schema}.dead_letter();
ALTER TABLE {schema}.queue DROP COLUMN completed_retention, DROP COLUMN failed_retention;
DROP TABLE {schema}.subscription;
DROP TABLE {schema}.dependency;
DROP INDEX {schema}.job_dead_letters;
ALTER TABLE {schema}.job
    DROP COLUMN dead_letter,
    DROP COLUMN origin_id,
    DROP COLUMN origin_queue,
    DROP COLUMN has_dependents,
    DROP COLUMN dependencies_left;
