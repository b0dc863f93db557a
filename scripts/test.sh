#!/usr/bin/env bash
# Runs every test of the workspace, after installing and starting what the
# tests need (PostgreSQL, a moto server, clickhouse-server, the tansu broker,
# Prometheus and Alertmanager, headless Chromium and chromedriver for the
# console's browser tests) and the embedding model semantic memory's tests
# run on.
# Safe to run again: every step skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh
scripts/ensure-moto.sh
scripts/ensure-clickhouse.sh
scripts/ensure-tansu.sh
scripts/ensure-prometheus.sh
scripts/ensure-browser.sh
model_dir="$(scripts/ensure-model.sh)"
url="${SENTINEL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

# Test databases left behind by an interrupted run.
psql "$url" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'sentinel\_t\_%' OR datname LIKE 'sentinel\_chaos\_%'" |
    while read -r db; do psql "$url" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
ch="${CLICKHOUSE_URL:-http://127.0.0.1:8123}"
curl -fsS "$ch/?query=SHOW+DATABASES" | { grep -E '^(sentinel_t_|chaos_)' || true; } |
    while read -r db; do curl -fsS "$ch/" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null; done

# The detection corpus is exactly what its generator writes.
corpus="$(mktemp -d)"
python3 scripts/make-corpus.py "$corpus" >/dev/null
diff -r "$corpus" lab/corpus || { echo "lab/corpus differs from scripts/make-corpus.py's output" >&2; exit 1; }
rm -rf "$corpus"
# So is semantic memory's labelled set.
pairs="$(mktemp -d)"
python3 scripts/make-memory-pairs.py "$pairs" 2>/dev/null
diff -r "$pairs" lab/memory || { echo "lab/memory differs from scripts/make-memory-pairs.py's output" >&2; exit 1; }
rm -rf "$pairs"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -q -- -D warnings
# Run every test binary; then one closing line that totals them all, so the
# summary does not end on a doc-test binary that happens to hold no test.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
# The model goes to the tests that ask for it by name, not to every process
# a test starts (SENTINEL_MODEL_DIR would turn memory on in each).
SENTINEL_TEST_MODEL_DIR="$model_dir" cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The chaos suite, reduced (100 incidents, fewer faults), on the debug binary.
cargo build --locked --bin sentinel
if CHAOS_INCIDENTS=100 CHAOS_FAULTS=reduced SENTINEL_BIN="${CARGO_TARGET_DIR:-target}/debug/sentinel" chaos/run.sh; then
    echo "test result: ok. 1 passed; 0 failed; (chaos suite, reduced)" | tee -a "$log"
else
    echo "test result: FAILED. 0 passed; 1 failed; (chaos suite, reduced)" | tee -a "$log"
    status=1
fi
# The live API against its own OpenAPI document, a key of each role.
if SENTINEL_BIN="${CARGO_TARGET_DIR:-target}/debug/sentinel" scripts/schemathesis.sh; then
    echo "test result: ok. 1 passed; 0 failed; (schemathesis, every role)" | tee -a "$log"
else
    echo "test result: FAILED. 0 passed; 1 failed; (schemathesis, every role)" | tee -a "$log"
    status=1
fi
# The deployment files, offline: Dockerfile, Terraform, the rendered manifests.
if scripts/check-deploy.sh; then
    echo "test result: ok. 1 passed; 0 failed; (deployment checks)" | tee -a "$log"
else
    echo "test result: FAILED. 0 passed; 1 failed; (deployment checks)" | tee -a "$log"
    status=1
fi
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
