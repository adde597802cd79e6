#!/usr/bin/env bash
# Builds dpgate at REV (default: the commit before HEAD) in a temporary
# worktree and runs the end-to-end bench with it as the baseline, so the
# two builds are compared on the same data in the same run.
#   benches/baseline.sh [REV]
set -euo pipefail
rev="${1:-HEAD~1}"
root="$(git rev-parse --show-toplevel)"
work="$(mktemp -d)"
trap 'git -C "$root" worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/src" "$rev" >/dev/null
echo "building the baseline ($(git -C "$root" rev-parse --short "$rev"))..." >&2
# A target directory of its own (kept between runs, so only the first
# builds the dependencies): a shared one would mix the two builds' crates,
# which have the same names.
(cd "$work/src" && CARGO_TARGET_DIR="$root/target/baseline" cargo build --release --bin dpgate -q)
cp "$root/target/baseline/release/dpgate" "$work/dpgate-baseline"
cd "$root"
DPGATE_BASELINE_BIN="$work/dpgate-baseline" cargo bench --bench end_to_end
