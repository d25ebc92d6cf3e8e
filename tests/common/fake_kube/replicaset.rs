//! The workloads side of the fake: the worker Deployment's `scale` subresource, a simulated
//! ReplicaSet, pod deletion with a grace period, and the Eviction subresource with the
//! PodDisruptionBudget check.
//!
//! The ReplicaSet counts the pods that are not being deleted: it creates Pending pods (no node
//! yet) when there are fewer than the replicas, and removes the first by the ranking of
//! KEP-2255 / `ActivePodsWithRanks` when there are more: unassigned before assigned, Pending
//! before Running, not Ready before Ready, lower `controller.kubernetes.io/pod-deletion-cost`
//! first, then the newer pod (the real one also ranks pods doubled up on a node and by
//! restarts and Ready time; every fake pod is on one node, without restarts).

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{not_found, reply, status, ClusterState, Params, Shared, NAMESPACE, WORKER_LABEL};

/// The worker Deployment and its ReplicaSet.
pub struct Deployment {
    pub name: String,
    pub replicas: u32,
    pub revision: u64,
    /// Numbers the pods the ReplicaSet creates.
    pub next_pod: u32,
    /// The `fieldManager` of each write to the scale.
    pub field_managers: Vec<String>,
}

/// What `spec.unhealthyPodEvictionPolicy` says about pods that are not Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhealthyPodEvictionPolicy {
    /// The default: a not Ready pod may be evicted only while the budget is met.
    IfHealthyBudget,
    AlwaysAllow,
}

/// A PodDisruptionBudget over the worker Pods.
#[derive(Debug, Clone, Copy)]
pub struct Pdb {
    pub max_unavailable: u32,
    pub unhealthy: UnhealthyPodEvictionPolicy,
}

/// A worker pod: on `node` (or Pending without one), Ready or not.
pub fn pod(name: &str, node: Option<&str>, ready: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NAMESPACE,
            "labels": {WORKER_LABEL.0: WORKER_LABEL.1},
        },
        "spec": {"containers": [{"name": "worker", "image": "remotemedia"}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }},
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    set_ready(&mut pod, ready);
    pod
}

pub fn set_ready(pod: &mut Value, ready: bool) {
    pod["status"]["conditions"] =
        json!([{"type": "Ready", "status": if ready { "True" } else { "False" }}]);
}

pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn is_deleting(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

fn is_worker(pod: &Value) -> bool {
    pod["metadata"]["labels"][WORKER_LABEL.0] == WORKER_LABEL.1
}

/// Starts deleting `name`: it gets a deletion timestamp now and is gone after the grace
/// period; the ReplicaSet replaces it at once. The pod as it is now, if it existed.
pub fn delete_pod(shared: &Arc<Shared>, name: &str) -> Option<Value> {
    let mut state = shared.state.lock();
    let pod = start_deleting(&mut state, shared, name)?;
    reconcile(&mut state, shared);
    Some(pod)
}

/// Sets the deletion timestamp of `name` and removes it after the grace period.
fn start_deleting(state: &mut ClusterState, shared: &Arc<Shared>, name: &str) -> Option<Value> {
    let mut pod = state.pods.get(name).cloned()?;
    if is_deleting(&pod) {
        return Some(pod);
    }
    pod["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
    state.put_pod(&shared.changes, pod.clone(), "MODIFIED");
    let grace = state.grace;
    let shared = Arc::clone(shared);
    let name = name.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let mut state = shared.state.lock();
        if let Some(pod) = state.pods.get(&name).cloned() {
            state.put_pod(&shared.changes, pod, "DELETED");
        }
    });
    Some(pod)
}

/// The Eviction subresource: deletes the pod unless its disruption budget forbids it (429).
pub fn evict(shared: &Arc<Shared>, name: &str) -> Response {
    let allowed = {
        let state = shared.state.lock();
        let Some(pod) = state.pods.get(name) else {
            return not_found("pods", name);
        };
        eviction_allowed(&state, pod)
    };
    if let Err(message) = allowed {
        return status(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", &message);
    }
    delete_pod(shared, name);
    reply(
        StatusCode::CREATED,
        super::status_body(201, "", "the pod is being evicted"),
    )
}

/// The eviction API's decision (pkg/registry/core/pod/storage/eviction.go), with the budget's
/// status computed on the spot as the disruption controller would.
fn eviction_allowed(state: &ClusterState, pod: &Value) -> Result<(), String> {
    // A terminating or Pending pod never counts against a budget.
    if is_deleting(pod) || pod["status"]["phase"] == "Pending" {
        return Ok(());
    }
    let Some(pdb) = state.pdb.filter(|_| is_worker(pod)) else {
        return Ok(());
    };
    let expected = state.deployment.as_ref().map_or(0, |d| d.replicas);
    let healthy = state
        .pods
        .values()
        .filter(|p| is_worker(p) && is_ready(p) && !is_deleting(p))
        .count() as u32;
    let desired_healthy = expected.saturating_sub(pdb.max_unavailable);
    let refused = || {
        Err(format!(
            "Cannot evict pod as it would violate the pod's disruption budget (healthy {healthy}, desired {desired_healthy})"
        ))
    };
    if !is_ready(pod) {
        return match pdb.unhealthy {
            UnhealthyPodEvictionPolicy::AlwaysAllow => Ok(()),
            UnhealthyPodEvictionPolicy::IfHealthyBudget if healthy >= desired_healthy => Ok(()),
            UnhealthyPodEvictionPolicy::IfHealthyBudget => refused(),
        };
    }
    if healthy > desired_healthy {
        Ok(())
    } else {
        refused()
    }
}

/// `deployments/{name}/scale`: GET, PATCH (merge) and PUT (409 on a stale resourceVersion).
pub fn scale(
    shared: &Arc<Shared>,
    method: &Method,
    name: &str,
    params: &Params,
    body: &Value,
) -> Response {
    let mut state = shared.state.lock();
    let Some(deployment) = state.deployment.as_mut().filter(|d| d.name == name) else {
        return not_found("deployments.apps", name);
    };
    match *method {
        Method::GET => {}
        Method::PATCH | Method::PUT => {
            if *method == Method::PUT
                && body["metadata"]["resourceVersion"] != json!(deployment.revision.to_string())
            {
                return super::conflict("deployments.apps", name);
            }
            let Some(replicas) = body["spec"]["replicas"].as_u64() else {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "spec.replicas");
            };
            deployment.replicas = u32::try_from(replicas).unwrap_or(u32::MAX);
            deployment
                .field_managers
                .push(params.get("fieldManager").cloned().unwrap_or_default());
            state.revision += 1;
            let revision = state.revision;
            if let Some(deployment) = state.deployment.as_mut() {
                deployment.revision = revision;
            }
            reconcile(&mut state, shared);
        }
        _ => return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "scale"),
    }
    let deployment = state
        .deployment
        .as_ref()
        .map_or((0, 0), |d| (d.replicas, d.revision));
    reply(
        StatusCode::OK,
        json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": deployment.1.to_string()},
            "spec": {"replicas": deployment.0},
            "status": {"replicas": deployment.0, "selector": format!("{}={}", WORKER_LABEL.0, WORKER_LABEL.1)},
        }),
    )
}

/// The ReplicaSet's sync: as many live worker pods as the replicas.
fn reconcile(state: &mut ClusterState, shared: &Arc<Shared>) {
    let Some(replicas) = state.deployment.as_ref().map(|d| d.replicas as usize) else {
        return;
    };
    let mut active: Vec<(String, Value)> = state
        .pods
        .iter()
        .filter(|(_, p)| is_worker(p) && !is_deleting(p))
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect();
    while active.len() < replicas {
        let Some(deployment) = state.deployment.as_mut() else {
            return;
        };
        let name = format!("{}-new-{}", deployment.name, deployment.next_pod);
        deployment.next_pod += 1;
        let pending = pod(&name, None, false);
        state.put_pod(&shared.changes, pending.clone(), "ADDED");
        active.push((name, pending));
    }
    if active.len() > replicas {
        active.sort_by_key(|(name, p)| deletion_rank(state, name, p));
        let excess: Vec<String> = active[..active.len() - replicas]
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        for name in excess {
            start_deleting(state, shared, &name);
        }
    }
}

/// Sort key: the pod to delete first sorts first.
fn deletion_rank(state: &ClusterState, name: &str, pod: &Value) -> (bool, u8, bool, i64, u64) {
    let assigned = pod["spec"]["nodeName"].is_string();
    let phase = match pod["status"]["phase"].as_str() {
        Some("Pending") => 0,
        Some("Unknown") | None => 1,
        _ => 2,
    };
    let cost = pod["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Newer first: a larger creation number sorts first.
    let age = u64::MAX - state.created.get(name).copied().unwrap_or(0);
    (assigned, phase, is_ready(pod), cost, age)
}
