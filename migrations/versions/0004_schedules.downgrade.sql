DROP TABLE {schema}.schedule;
