-- A new job's uid is made by its column's default rather than by a PL/pgSQL trigger function
-- called for every row: that call cost ~9 µs of the ~135 µs of server time a one-job insert
-- takes, and ~13 % of an insert of 50. The default reads the id the row has just been given:
-- PostgreSQL computes an inserted row's values in column order, the identity (id, the first
-- column) before uid, so currval() of the job sequence is that row's id, row by row, in a
-- multi-row INSERT and a COPY as well. A statement that gives the id itself must give the uid
-- too ({schema}.job_uid(id)), as pgqueue's own do (and a bulk load's uids are made by the
-- client from the ids it reserved): the default would name the sequence's last id instead.
ALTER TABLE {schema}.job ALTER COLUMN uid SET DEFAULT {schema}.job_uid(currval('{schema}.job_id_seq'));
DROP TRIGGER job_uid ON {schema}.job;
DROP FUNCTION {schema}.set_job_uid();
