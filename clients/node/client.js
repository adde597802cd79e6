// node-postgres against a running dpgate: browse the catalog, run a
// private aggregate with a bound parameter, read the notice and the
// accuracy columns. Usage: node client.js postgres://analyst:pw@127.0.0.1:6432/warehouse
const { Client } = require('pg');

function check(cond, what) {
  if (!cond) {
    console.error('FAILED: ' + what);
    process.exit(1);
  }
}

(async () => {
  const client = new Client({ connectionString: process.argv[2] });
  const notices = [];
  client.on('notice', (n) => notices.push(n.message));
  await client.connect();
  const tables = await client.query(
    "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = $1 ORDER BY 1", ['public']);
  check(tables.rows.map((r) => r.tablename).includes('visits'), 'tables: ' + JSON.stringify(tables.rows));
  const cols = await client.query(
    "SELECT column_name FROM information_schema.columns WHERE table_name = $1", ['visits']);
  const names = cols.rows.map((r) => r.column_name);
  check(names.includes('age') && !names.includes('secret'), 'columns: ' + names);
  const res = await client.query(
    'SELECT ward, COUNT(*) AS n FROM visits WHERE age >= $1 GROUP BY ward ORDER BY ward', [21]);
  check(res.rows.map((r) => r.ward).join() === 'A,B,C', 'rows: ' + JSON.stringify(res.rows));
  check(notices.some((n) => n.includes('this answer cost')), 'notice: ' + notices);
  await client.query("SET dp.accuracy = 'columns'");
  const acc = await client.query('SELECT AVG(cost) AS c FROM visits WHERE age < $1', [50]);
  check(acc.fields.map((f) => f.name).join() === 'c,c_ci', 'fields: ' + acc.fields.map((f) => f.name));
  check(acc.rows[0].c_ci > 0, 'half-width: ' + JSON.stringify(acc.rows));
  await client.end();
  console.log('node-postgres ok: ' + JSON.stringify(res.rows));
})().catch((e) => {
  console.error('FAILED: ' + e.stack);
  process.exit(1);
});
