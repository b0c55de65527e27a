#!/usr/bin/env bash
# Delete stored data: ./docker/reset-monitoring-data.sh jaeger|prometheus|grafana|all
# The service is stopped, its volume removed, and the service started again empty.
set -euo pipefail
source "$(dirname "$0")/_compose.sh"
what="${1:-}"
case "$what" in
  jaeger|prometheus|grafana) services=("$what") ;;
  all) services=(jaeger prometheus grafana) ;;
  *) echo "usage: $0 jaeger|prometheus|grafana|all" >&2; exit 2 ;;
esac
require_engine
for service in "${services[@]}"; do
  "${COMPOSE[@]}" rm --stop --force "$service"
  docker volume rm -f "${PROJECT}_${service}-data"
  echo "$service data deleted"
done
"${COMPOSE[@]}" up -d "${services[@]}"
