#!/usr/bin/env bash
# System tools the reliability suite drives: PostgreSQL's server programs (for a throwaway
# cluster it may crash), pgbouncer (transaction pooling), libfaketime (clock skew on one
# worker process) and iproute2 (network namespaces as hosts); and headless Chromium with its
# WebDriver for the dashboard's browser tests.
# Installs only what is missing.
set -euo pipefail

missing=()
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && [ -z "${PGQUEUE_PG_BINDIR:-}" ]; then
    missing+=(postgresql)
fi
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing+=(iproute2)
if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
    missing+=(libfaketime faketime)
fi
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts a pgbouncer service on install; the suite runs its own instances.
if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
fi
