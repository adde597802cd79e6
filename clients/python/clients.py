"""Python clients against a running dpgate: psycopg 3, asyncpg, SQLAlchemy.

Each one connects, browses the catalog, runs a private aggregate with a
bound parameter, and reads the accuracy report. Usage:

    python clients.py psycopg|asyncpg|sqlalchemy "postgresql://analyst:pw@127.0.0.1:6432/warehouse"

Exits non-zero with a message on the first failure.
"""

import asyncio
import sys


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def run_psycopg(url):
    import psycopg

    notices = []
    with psycopg.connect(url) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        cur = conn.cursor()
        # Catalog: declared tables and columns, through information_schema.
        cur.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = %s ORDER BY table_name",
            ("public",),
        )
        tables = [r[0] for r in cur.fetchall()]
        check("visits" in tables, f"visits listed: {tables}")
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY ordinal_position",
            ("visits",),
        )
        cols = [r[0] for r in cur.fetchall()]
        check("age" in cols and "secret" not in cols, f"visits columns: {cols}")
        # A private aggregate with a server-side bound parameter.
        cur.execute(
            "SELECT ward, COUNT(*) AS n, AVG(age) AS mean_age FROM visits "
            "WHERE age >= %s GROUP BY ward ORDER BY ward",
            (18,),
        )
        rows = cur.fetchall()
        check([r[0] for r in rows] == ["A", "B", "C"], f"wards: {rows}")
        check(all(isinstance(r[1], int) for r in rows), f"counts are ints: {rows}")
        check(any("this answer cost" in n for n in notices), f"notice: {notices}")
        # Accuracy columns, for tools that hide notices.
        cur.execute("SET dp.accuracy = 'columns'")
        cur.execute("SELECT COUNT(*) FROM visits WHERE age < %s", (65,))
        names = [d.name for d in cur.description]
        check(names == ["count", "count_ci"], f"accuracy columns: {names}")
        row = cur.fetchone()
        check(row[1] > 0, f"half-width: {row}")
        cur.execute("SHOW dp.budget")
        check(float(cur.fetchone()[0]) < 5, "budget was charged")
        # Transactions are accepted.
        conn.commit()
    print("psycopg ok:", rows)


async def run_asyncpg_async(url):
    import asyncpg

    notices = []
    conn = await asyncpg.connect(url)
    conn.add_log_listener(lambda c, m: notices.append(m.message))
    try:
        tables = await conn.fetch(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            "public",
        )
        check("visits" in [t["relname"] for t in tables], f"tables: {tables}")
        # asyncpg encodes parameters by the described types: age is int8.
        stmt = await conn.prepare(
            "SELECT ward, COUNT(*) AS n FROM visits WHERE age BETWEEN $1 AND $2 GROUP BY ward"
        )
        check(
            [t.name for t in stmt.get_parameters()] == ["int8", "int8"],
            f"parameter types: {stmt.get_parameters()}",
        )
        rows = await stmt.fetch(18, 90)
        check(sorted(r["ward"] for r in rows) == ["A", "B", "C"], f"rows: {rows}")
        # The same prepared statement, reused with other values.
        rows = await stmt.fetch(30, 60)
        check(len(rows) == 3, f"reuse: {rows}")
        await asyncio.sleep(0.1)
        check(any("this answer cost" in n for n in notices), f"notice: {notices}")
        budget = await conn.fetchval("SHOW dp.budget")
        check(float(budget) < 5, f"budget: {budget}")
    finally:
        await conn.close()
    # A pool resets connections between uses (pg_advisory_unlock_all, CLOSE ALL, RESET ALL).
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    async with pool.acquire() as c:
        await c.execute("SET dp.epsilon = 0.2")
    async with pool.acquire() as c:
        eps = await c.fetchval("SHOW dp.epsilon")
        check(eps == "0.1", f"pool reset restores dp.epsilon: {eps}")
    await pool.close()
    print("asyncpg ok:", [dict(r) for r in rows])


def run_asyncpg(url):
    asyncio.run(run_asyncpg_async(url))


def run_sqlalchemy(url):
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    insp = inspect(engine)
    tables = insp.get_table_names()
    check({"visits", "patients", "wards"} <= set(tables), f"tables: {tables}")
    cols = [c["name"] for c in insp.get_columns("visits")]
    check("age" in cols and "secret" not in cols, f"columns: {cols}")
    check(insp.get_pk_constraint("visits")["constrained_columns"] == [], "no primary key")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT ward, SUM(cost) AS total FROM visits WHERE age > :a GROUP BY ward ORDER BY ward"),
            {"a": 40},
        ).all()
        check([r.ward for r in rows] == ["A", "B", "C"], f"rows: {rows}")
    engine.dispose()
    print("sqlalchemy ok:", rows)


if __name__ == "__main__":
    which, url = sys.argv[1], sys.argv[2]
    {"psycopg": run_psycopg, "asyncpg": run_asyncpg, "sqlalchemy": run_sqlalchemy}[which](url)
