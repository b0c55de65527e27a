#!/usr/bin/env bash
# The demo, from a fresh clone: the example service under the agent, on the bundled mock LLM.
# Usage: ./scripts/demo.sh [--requests N] [--keep-running | --stack]
#   --stack: with ./docker/start-monitoring.sh running, fill its dashboard until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi

# pip's own lines show the progress (one per package collected, downloaded, built); lines that say
# nothing new are left out. Once everything is installed, a re-run only refreshes, quietly.
show_progress() { grep --line-buffered -v -e "^WARNING: Location" -e "^Requirement already satisfied" || true; }
if .venv/bin/python -c "import nexent_autoinstrument, opentelemetry.sdk, openai, fastapi, uvicorn" 2>/dev/null; then
  echo "== updating the package in .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[demo]' 2>&1 | show_progress
else
  echo "== installing the package and its demo extra into .venv: OpenTelemetry SDK and exporters,"
  echo "   prometheus-client, openai, fastapi, uvicorn (the first time takes a minute or two)"
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e '.[demo]' 2>&1 | show_progress
  echo "== installed"
fi

echo "== running the demo"
exec .venv/bin/nexent-autoinstrument demo "$@"
