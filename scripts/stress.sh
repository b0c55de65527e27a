#!/usr/bin/env bash
# The process suite on openai 1.x (httpx, not httpx2: it meets the collector and fork
# differently), then its timing-sensitive cases repeated under stress: the garbage collector
# every 100 allocations with thread switches every 10 µs, then both cores kept busy. A hang fails
# with every thread's stack. Last, the property tests with four times the examples of the test
# command. Run by .ci/run after the test command; needs its venvs (./scripts/test.sh).
# Usage: ./scripts/stress.sh [repetitions, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${1:-20}
echo "== the process suite, openai $(.venv-openai1/bin/python -c 'import openai; print(openai.__version__)')"
# (aiohttp's and Bedrock's cases do not depend on openai's HTTP client: the main run has them)
.venv-openai1/bin/python -m pytest -q -p no:cacheprovider -n 2 tests/process -k "not aiohttp and not bedrock"
for venv in .venv .venv-openai1; do
  for stress in gc load; do
    echo "== stress: $stress, $REPEAT repetitions, openai $("$venv/bin/python" -c 'import openai; print(openai.__version__)')"
    GUEST_STRESS=$stress GUEST_REPEAT=$REPEAT "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 2 \
      tests/process/test_guest.py
  done
done
echo "== property tests, four times the examples"
TEST_EXAMPLES_SCALE=4 .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests/test_fuzz.py \
  tests/test_adapters.py tests/test_redaction.py tests/test_cost.py tests/test_metrics_exposition.py
