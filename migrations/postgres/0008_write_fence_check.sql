-- The write fence checked inside a statement (src/store/fence.rs): a PostgreSQL-first write that
-- is one statement (an insert of a new row, the most common write of the monolith) runs on its
-- own, in autocommit, with this check in its WHERE clause, instead of a transaction opened at the
-- fence and committed after: one round trip instead of three.
--
-- It takes the fence's advisory lock shared (held to the end of the statement's transaction, as
-- a transaction's first statement does), then reads the fence. VOLATILE: in READ COMMITTED its
-- query takes a snapshot after the lock is granted, so a phase switch that held the lock
-- exclusively and committed a new mode is seen. Any other mode raises SQLSTATE DWF01 with the mode
-- as its message: the statement, and with it the write, does not happen, and the bridge takes
-- the write through the mode the file holds.
CREATE FUNCTION dualwrite.fence_allows_write() RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    mode text;
BEGIN
    -- 7239367511851099392 = 0x6477_6665_6e63_6500 ("dwfence\0"), store::fence::FENCE_LOCK.
    PERFORM pg_advisory_xact_lock_shared(7239367511851099392);
    SELECT write_mode INTO mode FROM dualwrite.write_fence WHERE id = 1;
    IF mode IN ('postgres_primary', 'postgres') THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'DWF01', MESSAGE = coalesce(mode, '');
END
$$;
