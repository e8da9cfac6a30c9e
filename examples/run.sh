#!/usr/bin/env bash
# Install flask_execute into .venv and run the example app: it starts its own local
# workers (Redis at localhost:6379 if it answers, else a filesystem broker under the
# instance folder), submits work, prints the results and stops its workers.
# `bash examples/run.sh web` serves the web example instead (examples/web.py: a page
# that starts a job and shows its progress live) on http://127.0.0.1:5000/; extra
# arguments go to `flask run`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
cd examples
if [ "${1:-}" = web ]; then
  shift
  exec ../.venv/bin/flask --app web.py run "$@"
fi
exec ../.venv/bin/python app.py "$@"
