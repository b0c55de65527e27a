#!/usr/bin/env bash
# The demo, from a fresh clone: the example service under the agent, on the bundled mock LLM.
# Usage: ./scripts/demo.sh [--requests N] [--keep-running]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[demo]' 2>&1 | grep -v "^WARNING: Location" || true
exec .venv/bin/nexent-autoinstrument demo "$@"
