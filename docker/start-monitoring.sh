#!/usr/bin/env bash
# Start Jaeger, Prometheus and Grafana for nexent-autoinstrument, and wait until they are healthy.
#   NEXENT_METRICS_TARGETS  host:port list Prometheus scrapes (default host.docker.internal:8000)
#   NEXENT_SERVICE_LABEL    the "service" label of those targets (default nexent-backend)
#   GRAFANA_ADMIN_USER / GRAFANA_ADMIN_PASSWORD   (default admin / admin)
#   MONITORING_BIND         address the ports bind to (default 127.0.0.1)
#   NEXENT_WITH_COLLECTOR=1 also start an OpenTelemetry Collector for apps that push OTLP metrics
#   HEALTH_TIMEOUT          seconds to wait for health (default 120)
set -euo pipefail
source "$(dirname "$0")/_compose.sh"
require_engine

targets="${NEXENT_METRICS_TARGETS:-host.docker.internal:8000}"
label="${NEXENT_SERVICE_LABEL:-nexent-backend}"
quoted=$(printf '%s' "$targets" | sed 's/[[:space:]]//g; s/,/", "/g')
printf '[\n  {"targets": ["%s"], "labels": {"service": "%s"}}\n]\n' "$quoted" "$label" \
  > "$HERE/prometheus/targets/apps.json"
if [ "${NEXENT_WITH_COLLECTOR:-0}" = 1 ]; then  # (without it, no target that is down for ever)
  printf '[\n  {"targets": ["otel-collector:8889"], "labels": {"service": "otlp-push"}}\n]\n'
else
  printf '[]\n'
fi > "$HERE/prometheus/targets/collector.json"

# From a container, host.docker.internal is the Docker bridge's address on Linux, not loopback.
scrape_info() {
  echo "Prometheus scrapes: $targets (service=\"$label\")"
  local bridge
  bridge=$(ip -4 -o addr show dev "${NEXENT_BRIDGE_INTERFACE:-docker0}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1)
  if [ -n "$bridge" ]; then
    echo "host.docker.internal is $bridge here: a service on the host must listen there as well as on"
    echo "127.0.0.1, e.g. HOST=127.0.0.1,$bridge for the example service (./scripts/demo.sh --stack does it)."
  fi
}
scrape_info

"${COMPOSE[@]}" up -d

bind="${MONITORING_BIND:-127.0.0.1}"
[ "$bind" = "0.0.0.0" ] && bind=127.0.0.1
deadline=$(( $(date +%s) + ${HEALTH_TIMEOUT:-120} ))
for check in "Jaeger|http://$bind:14269/" "Prometheus|http://$bind:9090/-/ready" "Grafana|http://$bind:3005/api/health"; do
  name=${check%%|*}; url=${check#*|}
  until curl -fsS -o /dev/null --max-time 2 "$url"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: $name did not become healthy at $url within ${HEALTH_TIMEOUT:-120} s; stopping the stack." >&2
      "${COMPOSE[@]}" logs --tail 30 >&2 || true
      "${COMPOSE[@]}" down >&2 || true
      exit 1
    fi
    sleep 2
  done
  echo "$name is up"
done

cat <<INFO

| UI         | URL                          | login |
|------------|------------------------------|-------|
| Grafana    | http://localhost:3005        | ${GRAFANA_ADMIN_USER:-admin} / (GRAFANA_ADMIN_PASSWORD, default admin) |
| Jaeger     | http://localhost:16686       | none |
| Prometheus | http://localhost:9090        | none |

Point your app at it: ENABLE_TELEMETRY=true OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318
INFO
scrape_info
