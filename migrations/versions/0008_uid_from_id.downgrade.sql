CREATE UNIQUE INDEX job_uid ON {schema}.job (uid);
DROP INDEX {schema}.job_uid_legacy;
DROP TRIGGER job_uid ON {schema}.job;
ALTER TABLE {schema}.job ALTER COLUMN uid SET DEFAULT {schema}.uuid_v7();
DROP FUNCTION {schema}.set_job_uid();
DROP FUNCTION {schema}.uid_version(uuid);
DROP FUNCTION {schema}.job_uid(bigint);
