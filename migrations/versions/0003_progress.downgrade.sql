ALTER TABLE {schema}.job DROP COLUMN progress;
