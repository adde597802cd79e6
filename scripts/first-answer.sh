#!/usr/bin/env bash
# The README's first two commands, timed: starts `dpgate demo` from a
# built binary, waits until it is ready, sends the README's grouped query
# with psql, checks that it answered with rows, and stops the demo.
#
#   scripts/first-answer.sh [BINARY]     default target/debug/dpgate,
#                                        what `cargo run -- demo` builds
#
# Prints the seconds from start to "ready" and from "ready" to the first
# answer. Add the build's own time (`cargo build --timings`) for a
# newcomer's whole wait. Like a newcomer's first run it starts from
# nothing: it deletes the demo's generated files (examples/demo/data,
# demo.db and ledger.sqlite, all git-ignored; the demo's budgets start
# afresh). The demo listens on 127.0.0.1:6543 and :6580.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/dpgate}
query="SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward"
log=$(mktemp)
answer=$(mktemp)

rm -rf examples/demo/data examples/demo/demo.db* examples/demo/ledger.sqlite*
start=$(date +%s.%N)
"$bin" demo >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log" "$answer"' EXIT

# Ready within two minutes (the demo generates and loads 120 000 rows).
for _ in $(seq 1 1200); do
  grep -q "dpgate demo is ready" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "dpgate demo exited before it was ready" >&2; exit 1; }
  sleep 0.1
done
grep -q "dpgate demo is ready" "$log" || { tail -20 "$log" >&2; echo "dpgate demo not ready after 120 s" >&2; exit 1; }
ready=$(date +%s.%N)

timeout 60 psql "postgresql://analyst:demo@127.0.0.1:6543/demo" -X -A -t -c "$query" >"$answer"
answered=$(date +%s.%N)

# The ward domain is declared, so every ward comes back as a row.
rows=$(grep -c '|' "$answer" || true)
if [ "$rows" -lt 1 ]; then
  cat "$answer" >&2
  echo "the README's query returned no rows" >&2
  exit 1
fi
awk -v s="$start" -v r="$ready" -v a="$answered" -v n="$rows" -v b="$bin" \
  'BEGIN { printf "%s demo: ready after %.2f s, first answer %.2f s later (%d rows)\n", b, r - s, a - r, n }'
