#!/usr/bin/env bash
# make demo: create a local fault-tolerant pair (two nodes, repmgr, synchronous) and apply specs/examples
# onto it: validate -> plan -> apply -> plan (no changes) -> status. Safe to run twice: the second run finds
# the pair and shows no changes. The pair keeps running; `bash scripts/demo.sh destroy` removes it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export ORDERS_APP_PASSWORD=${ORDERS_APP_PASSWORD:-orders-app-demo-password}
PGAASCTL=.venv/bin/pgaasctl

# As root, PostgreSQL runs as the postgres OS user, who must reach the nodes' directories. A
# PGAASCTL_LOCAL_DIR the user set is theirs: it is kept as it is.
mkdir -p state
if [ -z "${PGAASCTL_LOCAL_DIR:-}" ] && [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$PWD/state" 2>/dev/null; then
  export PGAASCTL_LOCAL_DIR=/var/lib/pgaasctl/local
  echo "(the postgres user cannot reach $PWD/state: the demo pair lives in $PGAASCTL_LOCAL_DIR)"
fi

if [ "${1:-}" = "destroy" ]; then
  if ! "$PGAASCTL" destroy specs/examples --auto-approve; then
    echo "The demo database is protected (deletion_protection: true in specs/examples/orders.yaml), so the pair" >&2
    echo "is not destroyed with it. To remove everything: set it to false, run apply, then run this again." >&2
    exit 1
  fi
  exit 0
fi

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$PGAASCTL" validate specs/examples
step "$PGAASCTL" init specs/examples
step "$PGAASCTL" plan specs/examples
step "$PGAASCTL" apply specs/examples --auto-approve
step "$PGAASCTL" plan specs/examples --detailed-exitcode
step "$PGAASCTL" status specs/examples
step "$PGAASCTL" connection orders specs/examples --database orders --role orders_app
step "$PGAASCTL" connection orders specs/examples --database orders --role orders_app --virtual-ip
cat <<MSG

The pair "orders" runs on this machine and matches the specs. Try:
  $PGAASCTL switchover orders specs/examples      # planned maintenance
  $PGAASCTL status specs/examples                 # after killing a node's PostgreSQL, watch the failover
                                                  # (and the virtual IP move to the new primary)
  $PGAASCTL apply specs/examples --auto-approve   # makes a degraded pair whole again
  bash scripts/demo.sh destroy                    # removes the pair (every process and file)

The web console and the REST API, over the same specs:
  $PGAASCTL user create ada --role admin specs/examples   # prints ada's one-time password
  $PGAASCTL serve specs/examples --listen 127.0.0.1:8080  # open http://127.0.0.1:8080/ and sign in
MSG
