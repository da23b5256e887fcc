-- Extensions the target schema needs: pgcrypto (pgp_sym_encrypt for api_keys secrets, gen_random_uuid)
-- and pgvector (embeddings.vector).
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS vector;
