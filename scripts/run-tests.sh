#!/usr/bin/env bash
# Run the test suite: sets up .venv, installs the project with its test extras,
# makes sure the servers the tests use are up, then runs pytest.
#   scripts/run-tests.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh test

# PostgreSQL: use the one on 127.0.0.1:5432 (or TEST_POSTGRES_URL); start the
# machine's cluster if it is installed but stopped. Without one, PostgreSQL
# tests are skipped and say so.
if [ -z "${TEST_POSTGRES_URL:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
# Chromium for the dashboard's browser test: Debian's package, driven by playwright.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "could not install chromium; the browser test will be skipped" >&2
fi
# Redis: the tests use 127.0.0.1:6379 (or TEST_REDIS_URL) when it answers and
# otherwise start their own redis-server, so nothing to do here.

ruff check --quiet .
exec python -m pytest "$@"
