#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver are installed (Debian's
# `chromium` and `chromium-driver`: /usr/bin/chromium, /usr/bin/chromedriver)
# for the console's browser tests, which start their own chromedriver.
# Safe to run again.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-browser: ${missing[*]} not installed; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "ensure-browser: installing ${missing[*]} from Debian's packages"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
chromium --version
chromedriver --version
