"""Query dpgate's HTTP API with Python requests.

    DPGATE_URL=http://127.0.0.1:8080 DPGATE_USER=analyst DPGATE_PASSWORD=... \
        python examples/http_client.py

Every answer carries its cost, the budget left and a 95% interval per
noisy column; a refusal carries a SQLSTATE, a message and a hint.
"""

import os
import sys

import requests

url = os.environ.get("DPGATE_URL", "http://127.0.0.1:8080")
auth = (os.environ.get("DPGATE_USER", "analyst"), os.environ["DPGATE_PASSWORD"])

answer = requests.post(
    f"{url}/v1/query",
    json={
        "sql": "SELECT ward, COUNT(*) AS visits, AVG(cost) AS avg_cost "
        "FROM visits GROUP BY ward ORDER BY ward",
        "epsilon": 0.2,
    },
    auth=auth,
    timeout=60,
)
if not answer.ok:
    error = answer.json()
    sys.exit(f"refused ({error['code']}): {error['message']}\nhint: {error['hint']}")
body = answer.json()
widths = {a["column"]: a["half_widths"] for a in body["accuracy"]}
for i, (ward, visits, avg_cost) in enumerate(body["rows"]):
    print(
        f"ward {ward}: {visits} visits (±{widths['visits'][i]:.0f}), "
        f"average cost {avg_cost:.2f} (±{widths['avg_cost'][i]:.2f})"
    )
print(f"cost ε = {body['cost']['epsilon']}; left ε = {body['remaining']['epsilon']}")

# Accuracy first: ask for ±50 on the count and let dpgate pick the least ε.
plan = requests.post(
    f"{url}/v1/explain",
    json={"sql": "SELECT COUNT(*) FROM visits", "target_error": 50},
    auth=auth,
    timeout=60,
).json()
print(f"a count within ±50 would cost ε = {plan['cost']['epsilon']:.4f}")

budget = requests.get(f"{url}/v1/budget", auth=auth, timeout=60).json()
print(f"budget: {budget['epsilon']['spent']} of {budget['epsilon']['limit']} spent")
