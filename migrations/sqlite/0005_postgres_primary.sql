-- The newest record of PostgreSQL's outbox (dualwrite.outbox) that this file holds: the changes
-- written to PostgreSQL first (write modes postgres_primary and postgres) up to this number are
-- in SQLite. Catching up applies the records after it, in order.
CREATE TABLE _dualwrite_pg_catchup (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    applied_seq INTEGER NOT NULL
);
INSERT INTO _dualwrite_pg_catchup (id, applied_seq) VALUES (1, 0);
