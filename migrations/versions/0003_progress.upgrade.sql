-- {"value": 0..1, "message": text or null}, written by the worker while the job runs.
ALTER TABLE {schema}.job ADD COLUMN progress jsonb;
