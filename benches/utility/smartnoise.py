"""SmartNoise SQL's side of the utility benchmark (benches/utility.rs).

Reads one JSON object on stdin:
  {"dsn": "...", "epsilon": 0.1, "delta": 1e-6, "repeats": 200,
   "metadata": "<path to the YAML>", "queries": ["SELECT ...", ...]}
and prints one JSON object: for each query, the privacy cost SmartNoise
records for it, the answers of every repeat (each a list of rows, each
row a list of cells; NULL is null) and each repeat's latency in seconds.
"""

import json
import sys
import time
import warnings

import psycopg2
import snsql
from snsql import Privacy

warnings.filterwarnings("ignore")


def cell(v):
    if v is None:
        return None
    if isinstance(v, (int, float, str)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def main():
    job = json.load(sys.stdin)
    conn = psycopg2.connect(job["dsn"])
    privacy = Privacy(epsilon=job["epsilon"], delta=job["delta"])
    reader = snsql.from_connection(conn, privacy=privacy, metadata=job["metadata"])
    out = {"version": getattr(snsql, "__version__", "unknown"), "queries": []}
    for query in job["queries"]:
        eps, delta = reader.get_privacy_cost(query)
        answers = []
        seconds = []
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            rows = reader.execute(query)
            seconds.append(time.perf_counter() - start)
            # The first row is the header.
            answers.append([[cell(v) for v in row] for row in rows[1:]])
        out["queries"].append(
            {
                "sql": query,
                "epsilon": eps,
                "delta": delta,
                "answers": answers,
                "seconds": seconds,
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
