DROP TABLE {schema}.worker;
DROP TABLE {schema}.job;
DROP TYPE {schema}.job_state;
