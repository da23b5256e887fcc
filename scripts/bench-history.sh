# The job_logs histories the benchmarks race on, one per key shape; sourced by scripts/bench-backfill
# and scripts/bench-verify (needs $BIN, the dualwrite binary, and $ROWS).
#
# - v7: 1,000 jobs, ROWS job_logs with time-ordered (uuid v7-like) ids, ASCII text, a small JSON
#   context (~100 bytes);
# - v4: 2,000 jobs, ROWS job_logs with random uuid v4 ids, unicode text, a larger JSON context
#   (~600 bytes: nested objects and arrays).
# Written with sqlite3 into a file migrated by dualwrite, with no outbox: history to backfill.

# generate SHAPE FILE: the history of one key shape.
generate() {
  local shape=$1 file=$2 jobs id message context
  DUALWRITE_SQLITE_PATH=$file "$BIN" migrate --only sqlite --create >/dev/null
  if [ "$shape" = v7 ]; then
    jobs=1000
    id="printf('%08x-%04x-7%03x-%04x-%012x', 400000000 + i / 65536, i % 65536, i % 4096, 32768 + i % 16384,
              abs(random()) % 281474976710656)"
    message="'fetched ' || (i % 97) || ' results for keyword \"rust sqlite outbox\" in ' || (i % 1000) || ' ms'"
    context="'{\"attempt\": ' || (i % 5) || ', \"http_status\": 200, \"results\": ' || (i % 97)
         || ', \"url\": \"https://example.com/p/' || i || '\"}'"
  else
    jobs=2000
    # Random version-4 ids: 122 random bits, the version nibble and the variant bits set.
    id="lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
              || substr('89ab', 1 + abs(random()) % 4, 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
    message="'получено ' || (i % 97) || ' результатов по запросу «ключевые слова» — 検索結果 ' || (i % 1000)
             || ' мс, café résumé naïve ✓'"
    context="'{\"attempt\": ' || (i % 5) || ', \"http_status\": 200, \"results\": ' || (i % 97)
         || ', \"url\": \"https://example.com/страница/' || i || '?q=ключ&lang=ru\"'
         || ', \"headers\": {\"content-type\": \"text/html; charset=utf-8\", \"server\": \"nginx/1.25\", \"x-cache\": \"MISS\"}'
         || ', \"timings\": {\"dns\": ' || (i % 13) || ', \"connect\": ' || (i % 29) || ', \"tls\": ' || (i % 31)
         || ', \"ttfb\": ' || (i % 211) || ', \"total\": ' || (i % 997) || '}'
         || ', \"keywords\": [\"rust\", \"sqlite\", \"миграция\", \"データ\", \"outbox\"]'
         || ', \"positions\": [' || (i % 10) || ', ' || (i % 20) || ', ' || (i % 30) || ', ' || (i % 40) || ']'
         || ', \"snippet\": \"Ein schnelles Beispiel für Unicode-Text: ñ, ü, ß, 中文, emoji 🚀 (' || i || ')\"}'"
  fi
  sqlite3 "$file" <<SQL
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs)
INSERT INTO jobs (id, type, payload, status, progress, queued_at, priority)
SELECT printf('%08x-0000-7000-8000-%012x', i, i), 'crawl', '{"keywords": ["rust", "sqlite"], "depth": 2}',
       'succeeded', '100', '2026-01-01T00:00:00.000000Z', 'normal'
FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS)
INSERT INTO job_logs (id, job_id, level, step, message, context, created_at)
SELECT $id,
       printf('%08x-0000-7000-8000-%012x', 1 + i % $jobs, 1 + i % $jobs),
       CASE i % 4 WHEN 0 THEN 'debug' WHEN 1 THEN 'info' WHEN 2 THEN 'warning' ELSE 'error' END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'fetch' END,
       $message,
       $context,
       strftime('%Y-%m-%dT%H:%M:%S', '2026-01-01', '+' || (i / 10) || ' seconds') || printf('.%06dZ', (i * 7919) % 1000000)
FROM n;
COMMIT;
SQL
}
