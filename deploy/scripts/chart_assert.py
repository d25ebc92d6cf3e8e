"""Assertions on what the chart renders (`make chart-check`): each names a property an
operator relies on and checks it in `helm template`'s output.

    chart_assert.py RENDERED.yaml NAME [NAME ...]
"""
import sys

import yaml


def objects(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


def find(docs, kind, component=None, name_suffix=None):
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and (component is None or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
        and (name_suffix is None or d["metadata"]["name"].endswith(name_suffix))
    ]
    assert found, f"no {kind} {component or ''} {name_suffix or ''} rendered"
    return found


def workload(docs, component):
    return next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                and d["metadata"]["labels"].get("app.kubernetes.io/component") == component)


def env(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    raise AssertionError(f"{container['name']}: no env {name}")


def container(obj):
    return obj["spec"]["template"]["spec"]["containers"][0]


def seconds(text):
    assert text.endswith("s"), text
    return int(text[:-1])


def replicas_owned_by_controller(docs):
    worker = workload(docs, "worker")
    assert "replicas" not in worker["spec"], "the worker Deployment renders replicas while the controller scales it"


def replicas_rendered(docs):
    worker = workload(docs, "worker")
    assert isinstance(worker["spec"].get("replicas"), int), "no worker replicas without autoscaling"


def probe_test_pod(docs):
    pods = [d for d in find(docs, "Pod") if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    assert len(pods) == 1, f"{len(pods)} helm test Pods"
    c = pods[0]["spec"]["containers"][0]
    assert c["args"][0] == "probe", c["args"]
    server = c["args"][c["args"].index("--server") + 1]
    assert server.startswith("http://") and "-frontend." in server, server
    assert pods[0]["spec"]["restartPolicy"] == "Never"


def no_probe_test_pod(docs):
    assert not [d for d in docs if d["kind"] == "Pod"], "a test Pod rendered"


def worker_not_evictable(docs):
    annotations = workload(docs, "worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations.get("cluster-autoscaler.kubernetes.io/safe-to-evict") == "false", annotations
    assert annotations.get("karpenter.sh/do-not-disrupt") == "true", annotations


def probes(docs):
    for component in ("frontend", "worker", "controller"):
        c = container(workload(docs, component))
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in c, f"{component}: no {probe}"
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 30, component


def tuned_probes(docs):
    c = container(workload(docs, "worker"))
    assert c["startupProbe"]["failureThreshold"] == 90, c["startupProbe"]
    assert c["livenessProbe"]["timeoutSeconds"] == 5, c["livenessProbe"]


def frontend_prestop(docs):
    fe = workload(docs, "frontend")
    c = container(fe)
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = fe["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = seconds(env(c, "REMOTEMEDIA_SHUTDOWN_TIMEOUT"))
    assert sleep > 0 and sleep + shutdown < grace, (sleep, shutdown, grace)


def worker_pdb_evicts_unhealthy(docs):
    pdb = next(d for d in find(docs, "PodDisruptionBudget", "worker"))
    policy = pdb["spec"].get("unhealthyPodEvictionPolicy")
    assert policy == "AlwaysAllow", f"worker PDB unhealthyPodEvictionPolicy {policy!r}: a drained (NotReady) worker's eviction could wait for others"


def controller_evicts_and_records_events(docs):
    role = next(d for d in find(docs, "Role", "controller"))
    rules = role["rules"]

    def allowed(group, resource, verb):
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
                   and not r.get("resourceNames") for r in rules)

    assert allowed("", "pods/eviction", "create"), "the controller cannot evict the worker it drained"
    for verb in ("create", "patch"):
        assert allowed("events.k8s.io", "events", verb), f"the controller cannot {verb} events.k8s.io Events"
    c = container(workload(docs, "controller"))
    assert seconds(env(c, "REMOTEMEDIA_DRAIN_TIMEOUT")) == seconds(env(container(workload(docs, "worker")), "REMOTEMEDIA_DRAIN_TIMEOUT"))
    names = [e["name"] for e in c.get("env", [])]
    assert "REMOTEMEDIA_WORKER_TOKEN" in names, "the controller cannot call the workers' drain and undrain"


def drain_timing(docs):
    worker = workload(docs, "worker")
    c = container(worker)
    drain = seconds(env(c, "REMOTEMEDIA_DRAIN_TIMEOUT"))
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain, (grace, drain)
    if worker["kind"] == "Deployment":
        deadline = worker["spec"]["progressDeadlineSeconds"]
        assert deadline > grace, f"progressDeadlineSeconds {deadline} <= grace {grace}: a rollout would report failure mid-drain"


def hour_long_drains(docs):
    drain_timing(docs)
    drain = seconds(env(container(workload(docs, "worker")), "REMOTEMEDIA_DRAIN_TIMEOUT"))
    assert drain >= 3600, drain


def per_role_placement(docs):
    for component in ("frontend", "worker", "controller"):
        spec = workload(docs, component)["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"pool": f"{component}-pool", "common": "yes"}, (component, spec.get("nodeSelector"))
        keys = [t["key"] for t in spec["tolerations"]]
        assert keys == ["common", component], (component, keys)
        assert spec["priorityClassName"] == f"{component}-priority", component
        spread = spec["topologySpreadConstraints"]
        assert spread[0]["topologyKey"] == "topology.kubernetes.io/zone", spread
        labels = spread[0]["labelSelector"]["matchLabels"]
        assert labels.get("app.kubernetes.io/component") == component, labels


def redis_admits_node_addresses(docs):
    policy = find(docs, "NetworkPolicy", name_suffix="-redis")[0]
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "10.0.0.0/16"}} in sources, sources


def servicemonitor_tls(docs):
    monitors = find(docs, "ServiceMonitor")
    assert len(monitors) == 2, [m["metadata"]["name"] for m in monitors]
    frontend = next(m for m in monitors if m["metadata"]["name"].endswith("-frontend"))
    other = next(m for m in monitors if not m["metadata"]["name"].endswith("-frontend"))
    endpoint = frontend["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"], endpoint
    assert frontend["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "frontend"
    assert other["spec"]["selector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["frontend"]}
    ], other["spec"]["selector"]
    assert "scheme" not in other["spec"]["endpoints"][0]


def servicemonitor_plain(docs):
    monitors = find(docs, "ServiceMonitor")
    assert len(monitors) == 1 and "scheme" not in monitors[0]["spec"]["endpoints"][0]


def frontends_admit_the_workers_sessions(docs):
    fe = workload(docs, "frontend")
    max_peers = int(env(container(fe), "WEBRTC_MAX_PEERS"))
    hpa = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    fewest = hpa[0]["spec"]["minReplicas"] if hpa else fe["spec"]["replicas"]
    capacity = int(env(container(workload(docs, "worker")), "REMOTEMEDIA_CAPACITY"))
    controller = container(workload(docs, "controller"))
    workers = int(env(controller, "REMOTEMEDIA_MAX_WORKERS"))
    assert fewest * max_peers >= workers * capacity, (
        f"{fewest} frontends x maxPeers {max_peers} = {fewest * max_peers} peers "
        f"< {workers} workers x capacity {capacity} = {workers * capacity} sessions"
    )


def limits_passed(docs):
    """Every connection and media bound reaches its role; the per-address cap is off."""
    fe = container(workload(docs, "frontend"))
    for name in ("REMOTEMEDIA_FIRST_MESSAGE_TIMEOUT", "REMOTEMEDIA_GRPC_KEEPALIVE_INTERVAL",
                 "REMOTEMEDIA_GRPC_KEEPALIVE_TIMEOUT", "REMOTEMEDIA_GRPC_MAX_STREAMS"):
        env(fe, name)
    assert env(fe, "REMOTEMEDIA_MAX_CONNECTIONS_PER_ADDRESS") == "0"
    names = {e["name"] for e in fe.get("env", [])}
    assert not names & {"REMOTEMEDIA_TRUSTED_PROXIES", "REMOTEMEDIA_PROXY_PROTOCOL"}, names
    worker = container(workload(docs, "worker"))
    for name in ("REMOTEMEDIA_PIPELINE_QUEUE_BYTES", "REMOTEMEDIA_MAX_DATACHANNELS",
                 "REMOTEMEDIA_DATACHANNEL_SEND_QUEUE_BYTES", "REMOTEMEDIA_MAX_TEXT_BUFFER_BYTES",
                 "REMOTEMEDIA_MAX_UTTERANCE_BYTES", "REMOTEMEDIA_NACK_BYTES_PER_SECOND",
                 "REMOTEMEDIA_UDP_STUN_RATE", "REMOTEMEDIA_UDP_STUN_BURST"):
        env(worker, name)


def rooms_passed(docs):
    """The room bounds reach both roles, the room pipeline and last-N the workers, the room
    claim the frontends."""
    fe = container(workload(docs, "frontend"))
    assert env(fe, "REMOTEMEDIA_MAX_ROOM_PARTICIPANTS") == "8"
    assert env(fe, "REMOTEMEDIA_REQUIRE_ROOM_CLAIM") == "true"
    worker = container(workload(docs, "worker"))
    assert env(worker, "REMOTEMEDIA_MAX_ROOM_PARTICIPANTS") == "8"
    assert env(worker, "REMOTEMEDIA_MAX_ROOMS") == "50"
    assert env(worker, "REMOTEMEDIA_ROOM_VIDEO_LAST_N") == "2"
    assert env(worker, "REMOTEMEDIA_ROOM_MANIFEST") == "vad"


def relay_between_workers(docs):
    """Rooms that span workers: the relay port reaches the workers, and their NetworkPolicy
    lets the release's workers (and only them) reach each other's API and relay port."""
    worker = container(workload(docs, "worker"))
    assert env(worker, "REMOTEMEDIA_RELAY_PORT") == "50053"
    assert env(worker, "REMOTEMEDIA_WORKER_TLS_CERT"), "relaying needs the worker API's TLS"
    assert not any(e["name"] == "REMOTEMEDIA_INSECURE_RELAY" for e in worker["env"])
    ports = {p["name"]: p for p in worker["ports"]}
    assert ports["relay"]["containerPort"] == 50053 and ports["relay"]["protocol"] == "UDP"
    assert env(container(workload(docs, "frontend")), "REMOTEMEDIA_ROOM_SPAN_WORKERS") == "true"
    policy = find(docs, "NetworkPolicy", name_suffix="-worker")[0]
    relay_rules = [r for r in policy["spec"]["ingress"]
                   if {"port": "relay", "protocol": "UDP"} in r.get("ports", [])]
    assert len(relay_rules) == 1, policy["spec"]["ingress"]
    # hostNetwork workers relay from their nodes' addresses.
    assert relay_rules[0]["from"] == [
        {"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "remotemedia", "app.kubernetes.io/instance": "remotemedia",
            "app.kubernetes.io/component": "worker"}}},
        {"ipBlock": {"cidr": "10.0.0.0/16"}},
    ], relay_rules[0]["from"]
    assert {"port": "api", "protocol": "TCP"} in relay_rules[0]["ports"]


def no_relay(docs):
    """Without rooms that span workers nothing of the relay is rendered."""
    worker = container(workload(docs, "worker"))
    assert not any(e["name"] == "REMOTEMEDIA_RELAY_PORT" for e in worker["env"])
    assert "relay" not in {p["name"] for p in worker["ports"]}


def connection_cap_behind_proxies(docs):
    """The cap keyed on the PROXY header of the listed load balancers."""
    fe = container(workload(docs, "frontend"))
    assert env(fe, "REMOTEMEDIA_MAX_CONNECTIONS_PER_ADDRESS") == "20"
    assert env(fe, "REMOTEMEDIA_TRUSTED_PROXIES") == "10.0.0.0/24,10.0.1.5"
    assert env(fe, "REMOTEMEDIA_PROXY_PROTOCOL") == "true"


CHECKS = {name: fn for name, fn in globals().items() if callable(fn) and fn.__module__ == "__main__"
          and name not in ("objects", "find", "workload", "env", "container", "seconds")}


def main():
    docs = objects(sys.argv[1])
    for name in sys.argv[2:]:
        fn = CHECKS[name.replace("-", "_")]
        try:
            fn(docs)
        except (AssertionError, KeyError) as err:
            sys.exit(f"  FAILED {name}: {err}")
        print(f"  asserted {name}")


if __name__ == "__main__":
    main()
