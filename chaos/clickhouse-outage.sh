#!/usr/bin/env bash
# Chaos: ClickHouse goes away under load and comes back. Runs the k6 ingest
# load test (scripts/load-test.sh) and, meanwhile, SIGKILLs clickhouse-server
# OUTAGE_AT seconds in and starts it again OUTAGE_FOR seconds later. The load
# test then checks that ClickHouse holds exactly the events accepted: the
# consumer held its batch and committed nothing while ClickHouse was away.
# Kills the local clickhouse-server: do not run it against a shared one.
set -euo pipefail
cd "$(dirname "$0")/.."
export RATE="${RATE:-3000}" DURATION="${DURATION:-40s}" SCENARIOS=ingest
outage_at="${OUTAGE_AT:-10}"
outage_for="${OUTAGE_FOR:-10}"

scripts/ensure-clickhouse.sh
(
    sleep "$outage_at"
    echo "chaos: killing clickhouse-server for ${outage_for}s"
    pkill -KILL -f "^/usr/sbin/clickhouse-server" || true
    sleep "$outage_for"
    echo "chaos: starting clickhouse-server again"
    scripts/ensure-clickhouse.sh
) &
chaos=$!
trap 'kill "$chaos" 2>/dev/null || true; scripts/ensure-clickhouse.sh >/dev/null' EXIT
scripts/load-test.sh
wait "$chaos"
