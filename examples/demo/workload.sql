-- A workload for `dpgate evaluate` on the demo hospital: the kinds of
-- questions analysts ask, each tested for privacy, accuracy, utility and
-- bias on the real backend.
--
--   dpgate evaluate --config examples/demo/proxy.toml \
--       --queries examples/demo/workload.sql --report evaluate.html
--
-- SET lines change what the queries after them spend, as in psql. The
-- privacy test finds larger violations at larger ε, so most queries run
-- at the demo's per-query maximum.

SET dp.epsilon = 1;

-- Counts and sums
SELECT COUNT(*) FROM visits;
SELECT COUNT(*) FROM visits WHERE readmitted;
SELECT COUNT(*) FROM visits WHERE age >= 65 AND cost > 5000;
SELECT SUM(cost) FROM visits;
SELECT SUM(length_of_stay) FROM visits WHERE ward = 'cardiology';
SELECT COUNT(DISTINCT patient_id) FROM visits;
SELECT COUNT(*) FILTER (WHERE readmitted) AS readmissions, COUNT(*) AS visits FROM visits;

-- Means, variances, quantiles
SELECT AVG(cost) FROM visits;
SELECT AVG(age), AVG(length_of_stay) FROM visits WHERE ward <> 'pediatrics';
SELECT VARIANCE(cost) FROM visits;
SELECT STDDEV(age) FROM visits;
SELECT MEDIAN(age) FROM visits;
SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY cost) FROM visits;

-- Grouped by declared domains
SELECT ward, COUNT(*) FROM visits GROUP BY ward;
SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward;
SELECT ward, SUM(cost) AS total FROM visits GROUP BY ward ORDER BY total DESC;
SELECT readmitted, AVG(length_of_stay) FROM visits GROUP BY readmitted;
SELECT region, COUNT(*) FROM patients GROUP BY region;
SELECT sex, AVG(birth_year) FROM patients GROUP BY sex;
SELECT ward, readmitted, COUNT(*) FROM visits GROUP BY ward, readmitted;

-- Grouped by keys found in the data (partition selection)
SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis;
SELECT diagnosis, AVG(cost) FROM visits WHERE ward = 'oncology' GROUP BY diagnosis;
SELECT EXTRACT(YEAR FROM visit_date) AS year, COUNT(*) FROM visits GROUP BY 1;
SELECT date_trunc('quarter', visit_date) AS quarter, AVG(length_of_stay) FROM visits GROUP BY 1;

-- Joins on the privacy unit
SELECT p.region, AVG(v.cost) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.region;
SELECT p.smoker, COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.smoker;
SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id WHERE p.birth_year < 1960;

-- Post-processing and smaller ε
SELECT ward, COUNT(*) FROM visits GROUP BY ward HAVING COUNT(*) > 5000;
SET dp.epsilon = 0.5;
SELECT SUM(cost) / COUNT(*) AS mean_cost, COUNT(*) FROM visits;
SET dp.epsilon = 0.1;
SELECT readmitted, COUNT(*), AVG(age) FROM visits GROUP BY readmitted;
