-- A demo table for dpgate's example proxy.toml: about 10 000 visits of
-- 3 334 patients (1 to 5 visits each), generated deterministically.
--   createdb warehouse && psql -d warehouse -f examples/visits.sql
-- Then give dpgate a read-only role:
--   CREATE ROLE dpgate LOGIN PASSWORD '...';
--   GRANT SELECT ON visits TO dpgate;
CREATE TABLE IF NOT EXISTS visits (
    patient_id int NOT NULL,
    age int,
    cost float8,
    ward text
);
TRUNCATE visits;
INSERT INTO visits
SELECT p,
       (p * 37 + v * 11) % 110,
       ((p * 7919 + v * 104729) % 500000) / 100.0,
       (ARRAY['A', 'B', 'C'])[1 + (p + v) % 3]
FROM generate_series(1, 3334) AS p,
     generate_series(1, 1 + p % 5) AS v;
