#!/bin/sh
# Gateway container entrypoint: `migrate-and-serve` (default), or any `python -m gateway` command (serve, migrate, billing …).
set -eu

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    # prometheus-client's multiprocess files must start empty, or a restarted container re-exports dead workers.
    rm -rf "${PROMETHEUS_MULTIPROC_DIR:?}"/*
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

if [ "${1:-migrate-and-serve}" = "migrate-and-serve" ]; then
    python -m gateway migrate
    exec python -m gateway serve
fi
exec python -m gateway "$@"
