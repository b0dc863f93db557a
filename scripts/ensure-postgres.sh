#!/usr/bin/env bash
# Makes sure the PostgreSQL server the tests use answers, idempotently:
# already answering -> nothing to do; installed but stopped -> start it;
# missing -> install it (root with apt-get only; otherwise say what to do).
#
# The tests connect to SENTINEL_TEST_DATABASE_URL, by default
# postgres://postgres@127.0.0.1:5432/postgres (trust auth on loopback).
set -euo pipefail

url="${SENTINEL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
host=127.0.0.1
port=5432

answers() { psql "$url" -Atqc 'SELECT 1' >/dev/null 2>&1; }

if answers; then
    echo "postgres: answering at ${url%%\?*}"
    exit 0
fi

if [ -n "${SENTINEL_TEST_DATABASE_URL:-}" ]; then
    echo "postgres: SENTINEL_TEST_DATABASE_URL is set but nothing answers there; start that server" >&2
    exit 1
fi

installed_now=no
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "postgres: installing from Debian packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        installed_now=yes
    else
        echo "postgres: not installed. Install it (e.g. 'sudo apt-get install postgresql') or set" >&2
        echo "SENTINEL_TEST_DATABASE_URL to a server where the tests may create databases." >&2
        exit 1
    fi
fi

version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
if [ -z "$version" ]; then
    echo "postgres: binaries found but no cluster under /etc/postgresql; create one with pg_createcluster" >&2
    exit 1
fi
hba="/etc/postgresql/$version/main/pg_hba.conf"
if [ "$installed_now" = yes ] && [ -w "$hba" ]; then
    # A cluster we just created for the tests: trust loopback, as the project's machines do.
    sed -ri 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    sed -ri 's/^(local\s+all\s+(postgres|all)\s+)\S+/\1trust/' "$hba"
fi
echo "postgres: starting cluster $version/main"
if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi

for _ in $(seq 1 60); do
    if pg_isready -q -h "$host" -p "$port" && answers; then
        echo "postgres: answering at ${url%%\?*}"
        exit 0
    fi
    sleep 0.5
done
echo "postgres: not answering at $url after 30 s; see /var/log/postgresql/" >&2
exit 1
