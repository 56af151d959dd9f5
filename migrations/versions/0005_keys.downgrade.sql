DROP TABLE {schema}.job_key;
DROP INDEX {schema}.job_debounce_key;
ALTER TABLE {schema}.job DROP COLUMN debounce_key;
DROP INDEX {schema}.job_uid;
ALTER TABLE {schema}.job DROP COLUMN uid;
DROP FUNCTION {schema}.uuid_v7();
