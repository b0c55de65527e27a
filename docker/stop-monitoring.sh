#!/usr/bin/env bash
# Stop the monitoring stack; the data volumes are kept (see reset-monitoring-data.sh).
set -euo pipefail
source "$(dirname "$0")/_compose.sh"
require_engine
"${COMPOSE[@]}" down
