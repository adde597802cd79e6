-- pgbench custom script: a private grouped aggregate with a random bound
-- parameter (extended protocol with -M extended or prepared).
\set lo random(0, 60)
SELECT ward, COUNT(*) FROM visits WHERE age >= :lo GROUP BY ward;
