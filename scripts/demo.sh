#!/usr/bin/env bash
# make demo: start a local PostgreSQL 15 on 127.0.0.2:54320, then plan -> apply -> plan on specs/examples.
# Safe to run twice: the server's data lives in state/demo-pg (or /var/tmp when the postgres user cannot
# reach this checkout), the store in state/pgaasctl.db. The server is stopped at the end unless
# DEMO_KEEP_RUNNING=1; `bash scripts/demo.sh stop` stops a kept one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG_BIN=/usr/lib/postgresql/15/bin
HOST=127.0.0.2
PORT=54320
export PGAASCTL_DEMO_ADMIN_PASSWORD=${PGAASCTL_DEMO_ADMIN_PASSWORD:-demo-admin-password}
export ORDERS_APP_PASSWORD=${ORDERS_APP_PASSWORD:-orders-app-demo-password}
PGAASCTL=.venv/bin/pgaasctl

as_server_user() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

data_root() {
  local repo_state="$PWD/state/demo-pg"
  if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$PWD/state" 2>/dev/null; then
    echo "$repo_state"
  else
    echo "/var/tmp/pgaasctl-demo-pg"
  fi
}

ROOT=$(data_root)
DATA=$ROOT/data
SOCKETS=$ROOT/run

stop_server() {
  if [ -f "$DATA/postmaster.pid" ]; then
    as_server_user "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null && echo "Stopped the demo server."
  fi
}

if [ "${1:-}" = "stop" ]; then stop_server; exit 0; fi

mkdir -p "$ROOT" "$SOCKETS"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$ROOT" "$SOCKETS"; fi
if [ ! -f "$DATA/PG_VERSION" ]; then
  echo "Creating the demo server's data directory in $DATA"
  pwfile=$(mktemp)
  printf '%s\n' "$PGAASCTL_DEMO_ADMIN_PASSWORD" >"$pwfile"
  chmod 644 "$pwfile"
  as_server_user "$PG_BIN/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" --auth-host=scram-sha-256 \
    --auth-local=peer -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  as_server_user bash -c "cat >>'$DATA/postgresql.conf'" <<CONF
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$SOCKETS'
CONF
  as_server_user bash -c "echo 'host all all 127.0.0.0/8 scram-sha-256' >>'$DATA/pg_hba.conf'"
fi
if ! as_server_user "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_server_user "$PG_BIN/pg_ctl" -D "$DATA" -l "$ROOT/postgres.log" -w start >/dev/null
  echo "Started PostgreSQL 15 on $HOST:$PORT (log: $ROOT/postgres.log)"
fi
if [ "${DEMO_KEEP_RUNNING:-0}" != "1" ]; then trap stop_server EXIT; fi

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$PGAASCTL" validate specs/examples
step "$PGAASCTL" plan specs/examples
step "$PGAASCTL" apply specs/examples --auto-approve
step "$PGAASCTL" plan specs/examples --detailed-exitcode
echo
echo "The specs and the server agree. Try: edit specs/examples/orders.yaml, then $PGAASCTL plan specs/examples"
echo "(keep the server for that with: DEMO_KEEP_RUNNING=1 make demo; stop it with: bash scripts/demo.sh stop)"
