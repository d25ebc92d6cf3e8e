#!/usr/bin/env bash
# `make chart-check`: lints the chart and validates every object it renders against the
# Kubernetes 1.37 schemas in strict mode (unknown fields are errors), for the default values,
# helm/values-kind.yaml, helm/values-production.yaml and the per-pod UDP mode. Objects of
# CRDs (ServiceMonitor, PrometheusRule of the Prometheus Operator) have no schema in
# kubernetes-validate: they are listed as SKIPPED, never counted as valid. Invalid value
# combinations must fail to render.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOOLS="$(deploy/scripts/tools.sh)"
HELM="$TOOLS/helm"
VALIDATE="$TOOLS/venv/bin/kubernetes-validate"
PY="$TOOLS/venv/bin/python"
K8S_VERSION=1.37.0
CHART=charts/remotemedia
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
# helm logs each symlink it follows (files/ links to examples/ and deploy/) at INFO level.
quiet() { grep -v 'level=INFO msg="found symbolic link' || true; }

# The validator must reject what it should: an unknown field in strict mode.
cat >"$OUT/canary.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: canary}
notAField: true
YAML
if "$VALIDATE" --strict --quiet -k "$K8S_VERSION" "$OUT/canary.yaml" >/dev/null 2>&1; then
	echo "chart-check: kubernetes-validate --strict accepted an unknown field; not trusting it" >&2
	exit 1
fi

check() {
	local label="$1"
	shift
	echo "== $label"
	"$HELM" lint --strict "$CHART" "$@" 2>&1 | quiet
	"$HELM" template remotemedia "$CHART" --namespace remotemedia "$@" 2> >(quiet >&2) >"$OUT/rendered.yaml"
	# Split: objects with a schema go to one file for the validator; CRD objects are named.
	"$PY" - "$OUT/rendered.yaml" "$OUT/validate.yaml" <<'PY'
import sys, yaml
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = []
for d in docs:
    key = (d.get("apiVersion"), d.get("kind"))
    name = f'{d["kind"]}/{d["metadata"]["name"]}'
    if key in CRDS:
        print(f"  SKIPPED {name}: a CRD (Prometheus Operator), no schema to validate against")
    elif "." in key[0].split("/")[0] and not key[0].split("/")[0].endswith(".k8s.io"):
        # An API group outside Kubernetes itself: a CRD nobody listed above.
        sys.exit(f"  {name}: {key[0]} is not a Kubernetes API: list it as a CRD above")
    else:
        keep.append(d)
yaml.safe_dump_all(keep, open(sys.argv[2], "w"), sort_keys=False)
print(f"  {len(keep)} objects to validate: " + ", ".join(sorted({d['kind'] for d in keep})))
PY
	"$VALIDATE" --strict --quiet -k "$K8S_VERSION" "$OUT/validate.yaml"
	echo "  valid (strict, Kubernetes $K8S_VERSION)"
}

# Renders with the given values and runs the named assertions of chart_assert.py on it.
asserts() {
	local label="$1" names="$2"
	shift 2
	echo "== asserting: $label"
	"$HELM" template remotemedia "$CHART" --namespace remotemedia "$@" 2> >(quiet >&2) >"$OUT/asserted.yaml"
	# shellcheck disable=SC2086 # the names are words
	"$PY" deploy/scripts/chart_assert.py "$OUT/asserted.yaml" $names
}

# Must not render: the chart's guards. `expect:TEXT` as the second argument: the refusal must
# say TEXT (so that another guard failing cannot pass for this one).
refuse() {
	local label="$1" expect="" error
	shift
	if [[ "${1:-}" == expect:* ]]; then
		expect="${1#expect:}"
		shift
	fi
	if error=$("$HELM" template remotemedia "$CHART" "$@" 2>&1 >/dev/null); then
		echo "chart-check: rendered although it must not: $label" >&2
		exit 1
	fi
	if [ -n "$expect" ] && ! grep -qF -- "$expect" <<<"$error"; then
		echo "chart-check: refused, but not with \"$expect\": $label: $error" >&2
		exit 1
	fi
	echo "== refused as it should: $label"
}

check "default values"
check "helm/values-kind.yaml" -f helm/values-kind.yaml
check "helm/values-production.yaml" -f helm/values-production.yaml
check "per-pod NodePort workers, STUN address, every optional object" \
	--set worker.networking.mode=perPodNodePort --set worker.replicas=3 \
	--set worker.publicIp.mode=stun --set 'webrtc.stunServers={stun:stun.example.com:3478}' \
	--set networkPolicy.enabled=true --set frontend.ingress.enabled=true \
	--set frontend.autoscaling.enabled=true --set monitoring.serviceMonitor.enabled=true \
	--set monitoring.prometheusRule.enabled=true --set monitoring.grafanaDashboard.enabled=true
check "per-role placement, hostNetwork workers admitted to the bundled Redis" \
	--set networkPolicy.enabled=true --set 'networkPolicy.nodeCidrs={10.0.0.0/16}' \
	--set controller.autoscaling.enabled=true --set worker.priorityClassName=media \
	--set 'worker.topologySpreadConstraints[0].maxSkew=1' \
	--set 'worker.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone' \
	--set 'worker.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway'
check "frontends serve TLS, workers too; a rediss:// Redis with a private CA and its URL from a Secret" \
	--set tls.enabled=true --set tls.existingSecret=remotemedia-tls \
	--set workerTls.enabled=true --set workerTls.existingSecret=remotemedia-worker-tls \
	--set redis.existingSecret=remotemedia-redis --set redis.tls.caSecret=remotemedia-redis-ca \
	--set networkPolicy.enabled=true --set frontend.ingress.enabled=true
# What operators rely on, asserted on the rendered objects (deploy/scripts/chart_assert.py).
asserts "default values: replicas rendered, the helm test Pod, probes, drains, workers not evictable, no relay" \
	"replicas-rendered probe-test-pod probes worker-not-evictable frontend-prestop drain-timing servicemonitor-plain no-relay" \
	--set monitoring.serviceMonitor.enabled=true
asserts "the controller autoscales: the chart leaves the worker replicas to it; it evicts and records Events" \
	"replicas-owned-by-controller worker-pdb-evicts-unhealthy controller-evicts-and-records-events" \
	--set controller.autoscaling.enabled=true \
	--set auth.existingSecret=remotemedia-auth --set auth.workerTokenKey=worker-token
asserts "helm/values-production.yaml: hour-long drains, frontends sized for the workers' sessions" \
	"replicas-owned-by-controller hour-long-drains frontends-admit-the-workers-sessions probe-test-pod worker-not-evictable frontend-prestop" \
	-f helm/values-production.yaml
asserts "per-role nodeSelector, tolerations, priority class and topology spread" \
	"per-role-placement" \
	--set 'common.tolerations[0].key=common' --set 'common.tolerations[0].operator=Exists' \
	--set frontend.nodeSelector.pool=frontend-pool --set 'common.nodeSelector.common=yes' \
	--set 'frontend.tolerations[0].key=frontend' --set 'frontend.tolerations[0].operator=Exists' \
	--set frontend.priorityClassName=frontend-priority \
	--set 'frontend.topologySpreadConstraints[0].maxSkew=1' \
	--set 'frontend.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone' \
	--set 'frontend.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway' \
	--set worker.nodeSelector.pool=worker-pool --set 'common.nodeSelector.common=yes' \
	--set 'worker.tolerations[0].key=worker' --set 'worker.tolerations[0].operator=Exists' \
	--set worker.priorityClassName=worker-priority \
	--set 'worker.topologySpreadConstraints[0].maxSkew=1' \
	--set 'worker.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone' \
	--set 'worker.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway' \
	--set controller.nodeSelector.pool=controller-pool --set 'common.nodeSelector.common=yes' \
	--set 'controller.tolerations[0].key=controller' --set 'controller.tolerations[0].operator=Exists' \
	--set controller.priorityClassName=controller-priority \
	--set 'controller.topologySpreadConstraints[0].maxSkew=1' \
	--set 'controller.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone' \
	--set 'controller.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway' \
	--set frontend.preStopSleepSeconds=5
asserts "every bound reaches its role, the per-address cap off" "limits-passed"
asserts "the per-address cap behind PROXY protocol load balancers" "connection-cap-behind-proxies" \
	--set frontend.limits.maxConnectionsPerAddress=20 \
	--set 'frontend.clientAddress.trustedProxies={10.0.0.0/24,10.0.1.5}' \
	--set frontend.clientAddress.proxyProtocol.enabled=true
asserts "rooms: bounds, last-N, a room pipeline, room claims required" "rooms-passed" \
	--set rooms.maxParticipants=8 --set rooms.maxPerWorker=50 --set rooms.videoLastN=2 \
	--set rooms.manifest=vad --set rooms.requireRoomClaim=true \
	--set auth.existingSecret=remotemedia-auth
asserts "rooms spanning workers: the relay port, worker-to-worker NetworkPolicy, TLS" \
	"relay-between-workers" --set rooms.spanWorkers=true --set networkPolicy.enabled=true \
	--set 'networkPolicy.nodeCidrs={10.0.0.0/16}' \
	--set workerTls.enabled=true --set workerTls.existingSecret=remotemedia-worker-tls
asserts "tunable probes" "tuned-probes" \
	--set worker.probes.startup.failureThreshold=90 --set worker.probes.liveness.timeoutSeconds=5
asserts "NetworkPolicy: hostNetwork workers reach the bundled Redis from their nodes" \
	"redis-admits-node-addresses" --set networkPolicy.enabled=true --set 'networkPolicy.nodeCidrs={10.0.0.0/16}'
asserts "ServiceMonitor over HTTPS to TLS frontends" "servicemonitor-tls no-probe-test-pod" \
	--set tls.enabled=true --set tls.existingSecret=remotemedia-tls --set monitoring.serviceMonitor.enabled=true
refuse "tls.enabled without tls.existingSecret" --set tls.enabled=true
refuse "workerTls.enabled without workerTls.existingSecret" --set workerTls.enabled=true
refuse "autoscaling with per-pod NodePort workers" \
	--set worker.networking.mode=perPodNodePort --set controller.autoscaling.enabled=true
refuse "no Redis at all" --set redis.bundled.enabled=false
refuse "publicIp.mode stun without STUN servers" --set worker.publicIp.mode=stun
refuse "a default manifest that does not exist" --set manifests.default=nope.yaml
refuse "a room manifest that no manifest is named" --set rooms.manifest=nope
refuse "room claims required without client authentication" --set rooms.requireRoomClaim=true
refuse "a NetworkPolicy for the bundled Redis without the nodes' CIDRs (hostNetwork workers)" \
	--set networkPolicy.enabled=true
refuse "a frontend preStop sleep as long as its grace period" \
	--set frontend.preStopSleepSeconds=30
refuse "rooms spanning workers without the worker API's TLS" \
	"expect:it needs workerTls.enabled" --set rooms.spanWorkers=true
refuse "rooms spanning workers, a NetworkPolicy, hostNetwork workers without the nodes' CIDRs" \
	"expect:the workers relay from their nodes' addresses" --set rooms.spanWorkers=true \
	--set rooms.insecureRelay=true --set networkPolicy.enabled=true --set redis.url=redis://r:6379
refuse "the PROXY protocol without trusted proxies" \
	--set frontend.clientAddress.proxyProtocol.enabled=true
echo "chart-check: ok"
