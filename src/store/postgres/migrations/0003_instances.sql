-- The instance registry: one row per running instance, keyed by its MQTT client id. The
-- row is its heartbeat (the database's clock, so hosts' clocks do not matter); who holds a
-- client id is decided by an advisory lock on the instance's own connection, which dies
-- with the process, not by this row.
CREATE TABLE scriptd_instances (
  client_id TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  pid BIGINT NOT NULL,
  version TEXT NOT NULL,
  started_at TIMESTAMPTZ NOT NULL,
  heartbeat_at TIMESTAMPTZ NOT NULL
);
