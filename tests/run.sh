#!/usr/bin/env bash
# Install flask_execute with its test tools into .venv, make sure Redis answers on
# 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (starting them, installing them if
# needed), and that Chromium and its
# driver are there for the browser tests (installing them if needed), then run the
# test suite.
# Extra arguments go to pytest: bash tests/run.sh -k futures -x
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

redis_answers() {
  .venv/bin/python - <<'PY'
import sys, redis
try:
    sys.exit(0 if redis.Redis("127.0.0.1", 6379, socket_connect_timeout=1).ping() else 1)
except Exception:
    sys.exit(1)
PY
}

if ! redis_answers; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "Redis is not installed: installing redis-server with apt-get" >&2
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
  fi
  echo "Starting redis-server on 127.0.0.1:6379" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''
  for _ in $(seq 50); do redis_answers && break; sleep 0.2; done
  redis_answers || { echo "Redis did not start" >&2; exit 1; }
fi

rabbitmq_answers() {
  .venv/bin/python - <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

# tests/test_rabbitmq.py and the cancel tests run against RabbitMQ (each in a virtual
# host of their own).
if ! rabbitmq_answers; then
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "RabbitMQ is not installed: installing rabbitmq-server with apt-get" >&2
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server
  fi
  echo "Starting RabbitMQ on 127.0.0.1:5672" >&2
  rabbitmq-server -detached
  for _ in $(seq 120); do rabbitmq_answers && break; sleep 0.5; done
  rabbitmq_answers || { echo "RabbitMQ did not start" >&2; exit 1; }
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "Chromium is not installed: installing chromium and chromium-driver with apt-get" >&2
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
fi

exec .venv/bin/python -m pytest "$@"
