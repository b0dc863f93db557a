#!/usr/bin/env bash
# The chaos suite: three `sentinel serve` replicas on one PostgreSQL, tansu
# and ClickHouse, CHAOS_INCIDENTS incidents (default 1,000) under process
# kills, a PostgreSQL restart, a broker restart and a ClickHouse outage;
# prints and asserts the table described in chaos/chaos.py.
#
#   chaos/run.sh                                  # 1,000 incidents, every fault
#   CHAOS_INCIDENTS=100 CHAOS_FAULTS=reduced chaos/run.sh
#   chaos/run.sh replicas                         # two processes: one incident, one limit
#
# SENTINEL_BIN picks the binary (default: a release build of this checkout).
# Restarts the local PostgreSQL cluster and kills the local clickhouse-server:
# run it on a test machine, not beside anything that needs them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh >/dev/null
scripts/ensure-moto.sh >/dev/null
scripts/ensure-clickhouse.sh >/dev/null
scripts/ensure-tansu.sh >/dev/null
if [ -z "${SENTINEL_BIN:-}" ]; then
    cargo build --release --locked --bin sentinel
    SENTINEL_BIN="${CARGO_TARGET_DIR:-target}/release/sentinel"
fi
export SENTINEL_BIN
case "${1:-chaos}" in
    chaos) exec python3 chaos/chaos.py ;;
    replicas) exec python3 chaos/replicas.py ;;
    *) echo "usage: chaos/run.sh [chaos|replicas]" >&2; exit 2 ;;
esac
