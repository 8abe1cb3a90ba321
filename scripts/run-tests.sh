#!/usr/bin/env bash
# Run the test suite: sets up .venv, installs the project with its test extras,
# makes sure the servers the tests use are up, then runs pytest; then, when it
# passed, runs the integration suite a second time with RabbitMQ as the broker.
#   scripts/run-tests.sh [pytest args...]
# RABBIT_PASS=auto (default): the RabbitMQ pass runs when no pytest args are given,
#   and is skipped, saying so, when no RabbitMQ is found.
# RABBIT_PASS=0: never.  RABBIT_PASS=1: also with args (they apply to the first
#   pass only), and a missing RabbitMQ is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
rabbit_pass=${RABBIT_PASS:-auto}
case "$rabbit_pass" in
  auto | 0 | 1) ;;
  *) echo "RABBIT_PASS=$rabbit_pass: use auto, 0 or 1" >&2; exit 2 ;;
esac
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
# RabbitMQ: tests/integration/test_rabbitmq.py and the RabbitMQ pass use the server
# on 127.0.0.1:5672 through rabbitmqctl (a vhost per stack); start the machine's
# server if it is installed but stopped.
rabbitmq_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if [ "$rabbit_pass" != 0 ] && ! rabbitmq_up && command -v rabbitmq-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "starting rabbitmq-server" >&2
  if command -v service >/dev/null 2>&1 && [ -x /etc/init.d/rabbitmq-server ]; then
    service rabbitmq-server start >/dev/null 2>&1 || true
  else
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  for _ in $(seq 60); do rabbitmq_up && break; sleep 1; done
fi

ruff check --quiet .
python -m pytest --durations=25 "$@"  # a failure ends the script here, with pytest's status

# The oldest-release pass: the integration tests that go through Celery's, kombu's and
# redis-py's seams again, on the oldest releases pyproject.toml's ranges allow (the run above
# had the newest), in a venv of its own. When the newest release is also the oldest, the run
# above covered both.
if [ "$#" -eq 0 ] && [ "${OLDEST_PASS:-auto}" != 0 ]; then
  if python scripts/oldest_pins.py --check >/dev/null; then
    echo "oldest-release pass: the installed releases are the oldest the ranges allow ($(python scripts/oldest_pins.py --check)); the run above covered both" >&2
  else
    pins=$(python scripts/oldest_pins.py)
    echo "oldest-release pass: the integration tests that cross Celery, kombu and redis-py, on $pins" >&2
    [ -x .venv-oldest/bin/python ] || python -m venv .venv-oldest
    # Everything else as the run above had it (its pip freeze as constraints): only the ranged
    # libraries differ, and pip need not solve the rest again (it can fail to, as it did on
    # OpenTelemetry's instrumentations, whose releases must all match).
    python -m pip freeze --exclude-editable | grep -viE '^(celery|kombu|redis|hiredis)==' | grep -v '^-e' \
      > .venv-oldest/constraints.txt
    .venv-oldest/bin/python -m pip install --quiet -c .venv-oldest/constraints.txt -e ".[test]" $pins
    PATH="$PWD/.venv-oldest/bin:$PATH" VIRTUAL_ENV="$PWD/.venv-oldest" \
      .venv-oldest/bin/python -m pytest -m "not postgres" tests/integration/test_celery_faces.py \
        tests/integration/test_job_lifecycle.py tests/integration/test_store_retries.py \
        tests/integration/test_threads_pool.py tests/integration/test_scale_out.py \
        tests/integration/test_flower.py tests/integration/test_payments.py tests/integration/test_email.py
  fi
fi

# The RabbitMQ pass: the integration tests that meet the broker again, the Celery
# broker a RabbitMQ vhost per stack (TEST_BROKER=rabbitmq, see tests/support/rabbitmq.py),
# the job store still Redis. Jobs never cross the broker (the store is the only queue):
# what does is Celery's own traffic, task events (Flower), remote control (inspect,
# add_consumer) and plain tasks, so these are the tests that run it, with a job's whole
# life, payments and mail, cancel and the event stream beside them. SQLite only: the
# broker does not meet the database.
if [ "$rabbit_pass" = 0 ] || { [ "$rabbit_pass" = auto ] && [ "$#" -gt 0 ]; }; then
  exit 0
fi
if [ "${TEST_BROKER:-redis}" = rabbitmq ]; then
  echo "RabbitMQ pass: not run again, TEST_BROKER=rabbitmq already applied to the run above" >&2
  exit 0
fi
if ! command -v rabbitmqctl >/dev/null 2>&1; then
  missing="rabbitmqctl not found"
elif ! rabbitmq_up; then
  missing="no RabbitMQ answering on 127.0.0.1:5672"
else
  missing=""
fi
if [ -n "$missing" ]; then
  if [ "$rabbit_pass" = 1 ]; then
    echo "RabbitMQ pass FAILED to start: $missing (RABBIT_PASS=1)" >&2
    exit 1
  fi
  echo "RabbitMQ pass SKIPPED: $missing; install rabbitmq-server to run it (RABBIT_PASS=0 hides this)" >&2
  exit 0
fi
echo "RabbitMQ pass: the integration tests that meet the broker, with RabbitMQ as the broker (SQLite only)" >&2
exec env TEST_BROKER=rabbitmq python -m pytest -m "not postgres" tests/integration/test_rabbitmq.py \
  tests/integration/test_celery_faces.py tests/integration/test_flower.py tests/integration/test_scale_out.py \
  tests/integration/test_job_lifecycle.py tests/integration/test_payments.py tests/integration/test_email.py \
  tests/integration/test_job_control.py tests/integration/test_threads_pool.py
