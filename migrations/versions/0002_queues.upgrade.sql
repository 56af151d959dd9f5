CREATE TABLE {schema}.queue (
    name       text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE {schema}.queue IS 'Settings of queues that have any: a queue without a row runs as usual';
