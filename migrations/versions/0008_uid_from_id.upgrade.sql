-- A new job's uid is made from its id: 48 bits of Unix milliseconds (the transaction's clock),
-- the version 8 (custom layout), 12 random bits, the variant, then the id in the last 63 bits.
-- It is unique because the id is (the primary key), and it is still never reused: an id handed
-- out again after a failover comes with another clock and other random bits. Looked up by the
-- id it carries and the primary key, it needs no index of its own, so a job's claim and its
-- completion (each a new row version) no longer write a uid index entry (a third of the index
-- writes of a job's life). Uids made before (version 7, random) keep theirs, in a partial index.
CREATE FUNCTION {schema}.job_uid(id bigint) RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
SELECT encode(
    substring(int8send(floor(extract(epoch FROM now()) * 1000)::bigint) FROM 3)
    || set_bit(set_bit(substring(uuid_send(gen_random_uuid()) FROM 7 FOR 2), 6, 0), 7, 1)
    || int8send(id | (-9223372036854775808)::bigint),
    'hex')::uuid
$$;

-- The UUID version of a uid: 8 for those made from their job's id.
CREATE FUNCTION {schema}.uid_version(uid uuid) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT get_byte(uuid_send(uid), 6) >> 4
$$;

-- Every insert that does not give a uid gets one made from the id it was given (identity values
-- are assigned before BEFORE triggers run). A bulk load gives its own (made the same way from
-- the ids it reserved), so the trigger's function does not run for it.
CREATE FUNCTION {schema}.set_job_uid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.uid := {schema}.job_uid(NEW.id);
    RETURN NEW;
END
$$;

ALTER TABLE {schema}.job ALTER COLUMN uid DROP DEFAULT;
CREATE TRIGGER job_uid BEFORE INSERT ON {schema}.job
    FOR EACH ROW WHEN (NEW.uid IS NULL) EXECUTE FUNCTION {schema}.set_job_uid();

CREATE UNIQUE INDEX job_uid_legacy ON {schema}.job (uid) WHERE {schema}.uid_version(uid) <> 8;
DROP INDEX {schema}.job_uid;
