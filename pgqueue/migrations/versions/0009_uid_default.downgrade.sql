CREATE FUNCTION {schema}.set_job_uid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.uid := {schema}.job_uid(NEW.id);
    RETURN NEW;
END
$$;

ALTER TABLE {schema}.job ALTER COLUMN uid DROP DEFAULT;
CREATE TRIGGER job_uid BEFORE INSERT ON {schema}.job
    FOR EACH ROW WHEN (NEW.uid IS NULL) EXECUTE FUNCTION {schema}.set_job_uid();
