# Shared by the monitoring scripts: find a Docker engine and a compose command, or explain.
# shellcheck shell=bash
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
COMPOSE_FILE="$HERE/docker-compose-monitoring.yml"
PROJECT="${NEXENT_MONITORING_PROJECT:-nexent}"

require_engine() {
  if ! command -v docker >/dev/null 2>&1; then
    echo "error: the docker command is not installed. Install Docker, then run this again." >&2
    exit 1
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "error: no Docker engine is running (docker info failed). Start Docker, then run this again." >&2
    echo "       Nothing was started." >&2
    exit 1
  fi
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    echo "error: neither 'docker compose' nor 'docker-compose' is available. Install the compose plugin." >&2
    exit 1
  fi
  COMPOSE+=(-p "$PROJECT" -f "$COMPOSE_FILE")
  if [ "${NEXENT_WITH_COLLECTOR:-0}" = 1 ]; then
    COMPOSE+=(--profile collector)
  fi
}
