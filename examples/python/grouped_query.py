"""A grouped private query from Python with psycopg 3, printed with the
95% interval of every noisy number.

    pip install "psycopg[binary]"
    python examples/python/grouped_query.py                      # the demo
    python examples/python/grouped_query.py "postgresql://analyst:...@127.0.0.1:6432/warehouse" \
        "SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward"

`SET dp.accuracy = 'columns'` makes dpgate add a `<column>_ci` column (the
interval's half-width) after each noisy column, so the intervals arrive
with the rows; the NOTICE says what the answer cost.
"""

import sys

import psycopg

URL = sys.argv[1] if len(sys.argv) > 1 else "postgresql://analyst:demo@127.0.0.1:6543/demo"
QUERY = (
    sys.argv[2]
    if len(sys.argv) > 2
    else "SELECT ward, COUNT(*) AS visits, AVG(cost) AS avg_cost FROM visits GROUP BY ward ORDER BY ward"
)


def main():
    with psycopg.connect(URL, autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("SET dp.accuracy = 'columns'")
        cur = conn.execute(QUERY)
        names = [c.name for c in cur.description]
        rows = cur.fetchall()

    # Pair each noisy column with its `_ci` column.
    shown = [i for i, n in enumerate(names) if not n.endswith("_ci")]
    ci = {i: names.index(names[i] + "_ci") for i in shown if names[i] + "_ci" in names}
    print(QUERY)
    for row in rows:
        parts = []
        for i in shown:
            value = row[i]
            if i in ci and row[ci[i]] is not None:
                parts.append(f"{names[i]} = {fmt(value)} ± {fmt(row[ci[i]])}")
            else:
                parts.append(f"{names[i]} = {fmt(value)}")
        print("  " + ", ".join(parts))
    for n in notices:
        print(n)


def fmt(v):
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "NULL" if v is None else str(v)


if __name__ == "__main__":
    main()
