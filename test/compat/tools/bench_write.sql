-- pgbench custom script (test/compat_tools_test.go): each client updates
-- accounts only in its own range of 10000 (client_id 0..7, scale 1), reads
-- the new balance back in a separate statement (an autocommit read after an
-- autocommit write: read-your-writes through pgsplit's routing) and fails
-- the transaction with a division by zero if the read is stale (not by a
-- constant: the planner would fold 1 / 0 in any branch), then
-- records the delta in pgbench_history.
\set aid :client_id * 10000 + random(1, 10000)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid RETURNING abalance AS after \gset
SELECT CASE WHEN abalance = :after THEN 1 ELSE 1 / (aid - aid) END AS fresh FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);
