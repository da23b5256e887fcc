-- Read-your-writes across processes (src/reads.rs): a read meant for PostgreSQL asks whether the
-- outbox or the dead letters hold a change of its row (or, for a list, of its table), whichever
-- process wrote it. These indexes make that one probe, however long the backlog.
CREATE INDEX _dualwrite_outbox_row ON _dualwrite_outbox (table_name, row_key);
CREATE INDEX _dualwrite_dead_letters_row ON _dualwrite_dead_letters (table_name, row_key);
