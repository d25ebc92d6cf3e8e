//! A small, stateful fake of the Kubernetes API server for the controller's tests. No real API
//! server can run on this machine, so this one keeps the semantics the controller relies on,
//! served over real HTTP on 127.0.0.1 so the real `kube` client talks to it:
//!
//! - objects carry resourceVersions from one counter; a LIST returns the current one;
//! - WATCH replays the changes after its resourceVersion, then follows live, sends BOOKMARKs
//!   when `allowWatchBookmarks` is set, ends at `timeoutSeconds`; a resourceVersion older than
//!   the last compaction gets a 410 Gone ERROR event (the client must list again);
//! - a PUT whose resourceVersion is not the stored one is a 409 Conflict (Leases);
//! - `coordination.k8s.io/v1` Leases: get, create (409 when it exists), replace;
//! - the Deployment `scale` subresource, and a simulated ReplicaSet (see [`replicaset`]) that
//!   creates Pending pods when the replicas rise and removes pods by the KEP-2255 ranking when
//!   they drop, and replaces deleted pods;
//! - pod deletion (a grace period, then the pod is gone) and the Eviction subresource with the
//!   PodDisruptionBudget check (429 when the budget forbids it, `unhealthyPodEvictionPolicy`);
//! - `events.k8s.io/v1` Events are stored for the tests to read.
//!
//! One namespace; label selectors of `key=value` terms only; no authentication, server-side
//! apply, managedFields or field selectors.

mod replicaset;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

// Not every test binary that compiles tests/common uses both.
#[allow(unused_imports)]
pub use replicaset::{Pdb, UnhealthyPodEvictionPolicy};
use watch::Change;

/// The namespace everything lives in.
pub const NAMESPACE: &str = "test";
/// The labels of the worker Pods (and the Deployment's pod template).
pub const WORKER_LABEL: (&str, &str) = ("app.kubernetes.io/component", "worker");

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

struct Shared {
    state: Mutex<ClusterState>,
    /// Pod changes to the open watches.
    changes: broadcast::Sender<Change>,
    /// Cancelled (and replaced) to end every open watch, as an API server restart or its
    /// watch timeout does.
    watches: Mutex<CancellationToken>,
    /// Closed (false): new WATCH requests wait until it opens (a test lines up a 410).
    gate: tokio::sync::watch::Sender<bool>,
}

/// Everything the fake API server stores.
#[derive(Default)]
struct ClusterState {
    /// The last resourceVersion handed out.
    revision: u64,
    pods: BTreeMap<String, Value>,
    /// Order of creation of the pods (the ReplicaSet's last tie-break: newer goes first).
    created: HashMap<String, u64>,
    leases: BTreeMap<String, Value>,
    events: Vec<Value>,
    deployment: Option<replicaset::Deployment>,
    pdb: Option<Pdb>,
    /// Pod changes a watch can resume from (those after `compacted`).
    history: Vec<Change>,
    /// Watches from a resourceVersion before this get 410 Gone.
    compacted: u64,
    /// Between BOOKMARKs on watches that asked for them.
    bookmark_every: Duration,
    /// How long a deleted pod terminates before it is gone.
    grace: Duration,
    /// Every request: `METHOD path?query`.
    requests: Vec<String>,
}

impl FakeKube {
    /// Starts an empty cluster on 127.0.0.1.
    pub async fn start() -> Self {
        let (changes, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            state: Mutex::new(ClusterState {
                bookmark_every: Duration::from_millis(500),
                grace: Duration::from_millis(300),
                ..ClusterState::default()
            }),
            changes,
            watches: Mutex::new(CancellationToken::new()),
            gate: tokio::sync::watch::Sender::new(true),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        Self {
            address,
            shared,
            stop,
        }
    }

    /// A `kube` client of this server, namespace [`NAMESPACE`], configured as the controller
    /// configures its own (no retries inside the client).
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.address).parse().unwrap();
        let mut config = kube::Config::new(url);
        config.default_namespace = NAMESPACE.into();
        config.connect_timeout = Some(Duration::from_secs(5));
        config.default_retry = false;
        kube::Client::try_from(config).unwrap()
    }

    /// The kubelet's readiness probe: sets `pod`'s Ready condition from `GET /readyz` on
    /// `http` every 200 ms, until the fake stops.
    pub fn probe_readiness(&self, pod: &str, http: SocketAddr) {
        let (shared, stop, pod) = (Arc::clone(&self.shared), self.stop.clone(), pod.to_owned());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let ready = readyz(http).await;
                {
                    let mut state = shared.state.lock();
                    if let Some(mut object) = state.pods.get(&pod).cloned() {
                        if replicaset::is_ready(&object) != ready {
                            replicaset::set_ready(&mut object, ready);
                            state.put_pod(&shared.changes, object, "MODIFIED");
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// A worker Pod scheduled on a node, Ready or not.
    pub fn add_pod(&self, name: &str, ready: bool) {
        let mut state = self.shared.state.lock();
        let pod = replicaset::pod(name, Some("node-1"), ready);
        state.put_pod(&self.shared.changes, pod, "ADDED");
    }

    /// A worker Pod the scheduler found no node for (Pending).
    pub fn add_pod_pending(&self, name: &str) {
        let mut state = self.shared.state.lock();
        let pod = replicaset::pod(name, None, false);
        state.put_pod(&self.shared.changes, pod, "ADDED");
    }

    /// Sets a pod's Ready condition.
    pub fn set_ready(&self, name: &str, ready: bool) {
        let mut state = self.shared.state.lock();
        let Some(mut pod) = state.pods.get(name).cloned() else {
            return;
        };
        replicaset::set_ready(&mut pod, ready);
        state.put_pod(&self.shared.changes, pod, "MODIFIED");
    }

    /// The pods now, with whether each is being deleted.
    pub fn pods(&self) -> BTreeMap<String, PodView> {
        let state = self.shared.state.lock();
        state
            .pods
            .iter()
            .map(|(name, pod)| (name.clone(), PodView::of(pod)))
            .collect()
    }

    /// A worker Deployment `name` whose ReplicaSet keeps `replicas` pods (it creates none
    /// now: add the existing ones with [`Self::add_pod`]).
    pub fn add_deployment(&self, name: &str, replicas: u32) {
        let mut state = self.shared.state.lock();
        state.revision += 1;
        let revision = state.revision;
        state.deployment = Some(replicaset::Deployment {
            name: name.to_owned(),
            replicas,
            revision,
            next_pod: 0,
            field_managers: Vec::new(),
        });
    }

    /// The Deployment's replicas, and the field managers of the writes to them.
    pub fn deployment(&self) -> Option<(u32, Vec<String>)> {
        let state = self.shared.state.lock();
        state
            .deployment
            .as_ref()
            .map(|d| (d.replicas, d.field_managers.clone()))
    }

    /// A PodDisruptionBudget over the worker Pods.
    pub fn set_pdb(&self, pdb: Pdb) {
        self.shared.state.lock().pdb = Some(pdb);
    }

    /// The Leases now.
    pub fn lease(&self, name: &str) -> Option<Value> {
        self.shared.state.lock().leases.get(name).cloned()
    }

    /// The Events created so far.
    pub fn events(&self) -> Vec<Value> {
        self.shared.state.lock().events.clone()
    }

    /// Every request so far (`METHOD path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.state.lock().requests.clone()
    }

    /// Forgets the pod history up to now, as etcd's compaction does: a watch resuming from an
    /// older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut state = self.shared.state.lock();
        state.compacted = state.revision;
        state.history.clear();
    }

    /// Ends every open watch (as the API server's watch timeout or a restart does).
    pub fn end_watches(&self) {
        let mut watches = self.shared.watches.lock();
        watches.cancel();
        *watches = CancellationToken::new();
    }

    /// New WATCH requests wait (until [`Self::open_watches`]).
    pub fn hold_watches(&self) {
        self.shared.gate.send_replace(false);
    }

    pub fn open_watches(&self) {
        self.shared.gate.send_replace(true);
    }

    /// How many LISTs of pods were served (a re-list after a 410 adds one).
    pub fn pod_lists(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET /api/v1/namespaces/")
                    && r.contains("/pods?")
                    && !r.contains("watch=true")
            })
            .count()
    }

    /// A write to a pod the fake does not otherwise make: bumps the resourceVersion (e.g. an
    /// unrelated pod) so a compaction leaves a watcher without bookmarks behind.
    pub fn touch_other_pod(&self, name: &str) {
        let mut state = self.shared.state.lock();
        let mut pod = replicaset::pod(name, Some("node-1"), true);
        pod["metadata"]["labels"] = json!({"app.kubernetes.io/component": "other"});
        let kind = if state.pods.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.put_pod(&self.shared.changes, pod, kind);
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop.cancel();
        self.shared.watches.lock().cancel();
    }
}

/// What a test needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub ready: bool,
    pub deleting: bool,
    /// Scheduled on a node (a Pending pod of the ReplicaSet is not).
    pub assigned: bool,
}

impl PodView {
    fn of(pod: &Value) -> Self {
        Self {
            ready: replicaset::is_ready(pod),
            deleting: !pod["metadata"]["deletionTimestamp"].is_null(),
            assigned: pod["spec"]["nodeName"].is_string(),
        }
    }
}

impl ClusterState {
    /// Stores `pod` under a new resourceVersion and tells the watches.
    fn put_pod(&mut self, changes: &broadcast::Sender<Change>, mut pod: Value, kind: &str) {
        self.revision += 1;
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        pod["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        if !self.created.contains_key(&name) {
            self.created.insert(name.clone(), self.revision);
        }
        let change = Change {
            revision: self.revision,
            kind: kind.to_owned(),
            object: pod.clone(),
        };
        if kind == "DELETED" {
            self.pods.remove(&name);
            self.created.remove(&name);
        } else {
            self.pods.insert(name, pod);
        }
        self.history.push(change.clone());
        let _ = changes.send(change);
    }
}

/// Whether `GET /readyz` answers 200.
async fn readyz(http: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(http).await else {
        return false;
    };
    let request = b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n";
    let mut response = String::new();
    stream.write_all(request).await.is_ok()
        && stream.read_to_string(&mut response).await.is_ok()
        && response.split_whitespace().nth(1) == Some("200")
}

// ---- HTTP ----

type Params = HashMap<String, String>;

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let params: Params = Query::try_from_uri(&uri)
        .map(|Query(p)| p)
        .unwrap_or_default();
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.state.lock().requests.push(format!("{method} {uri}"));
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["api", "v1", "namespaces", _, "pods"]) => {
            if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let _ = shared.gate.subscribe().wait_for(|open| *open).await;
                watch::serve(&shared, &params)
            } else {
                list_pods(&shared, &params)
            }
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods", name]) => {
            let state = shared.state.lock();
            match state.pods.get(*name) {
                Some(pod) => reply(StatusCode::OK, pod.clone()),
                None => not_found("pods", name),
            }
        }
        (Method::PATCH, ["api", "v1", "namespaces", _, "pods", name]) => {
            let mut state = shared.state.lock();
            let Some(mut pod) = state.pods.get(*name).cloned() else {
                return not_found("pods", name);
            };
            merge(&mut pod, &body);
            state.put_pod(&shared.changes, pod.clone(), "MODIFIED");
            reply(StatusCode::OK, pod)
        }
        (Method::DELETE, ["api", "v1", "namespaces", _, "pods", name]) => {
            match replicaset::delete_pod(&shared, name) {
                Some(pod) => reply(StatusCode::OK, pod),
                None => not_found("pods", name),
            }
        }
        (Method::POST, ["api", "v1", "namespaces", _, "pods", name, "eviction"]) => {
            replicaset::evict(&shared, name)
        }
        (_, ["apis", "apps", "v1", "namespaces", _, "deployments", name, "scale"]) => {
            replicaset::scale(&shared, &method, name, &params, &body)
        }
        (_, ["apis", "coordination.k8s.io", "v1", "namespaces", _, "leases", rest @ ..]) => {
            lease(&shared, &method, rest.first().copied(), body)
        }
        (Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", _, "events"])
        | (Method::PATCH, ["apis", "events.k8s.io", "v1", "namespaces", _, "events", _]) => {
            let mut state = shared.state.lock();
            state.events.push(body.clone());
            reply(StatusCode::CREATED, body)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the fake API server does not serve {method} {uri}"),
        ),
    }
}

fn list_pods(shared: &Shared, params: &Params) -> Response {
    let state = shared.state.lock();
    let selector = params.get("labelSelector").map(String::as_str);
    let items: Vec<Value> = state
        .pods
        .values()
        .filter(|pod| matches_selector(pod, selector))
        .cloned()
        .collect();
    reply(
        StatusCode::OK,
        json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": state.revision.to_string()},
            "items": items,
        }),
    )
}

/// A JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(object) = target.as_object_mut() {
                object.remove(key);
            }
        } else {
            merge(&mut target[key], value);
        }
    }
}

/// Whether `object`'s labels match a selector of `key=value` terms.
fn matches_selector(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (key, value) = term.split_once('=').unwrap_or((term, ""));
        let value = value.trim_start_matches('=');
        object["metadata"]["labels"][key].as_str() == Some(value)
    })
}

/// Leases: GET, POST (409 when it exists), PUT (409 unless it carries the stored
/// resourceVersion).
fn lease(shared: &Shared, method: &Method, name: Option<&str>, mut body: Value) -> Response {
    let mut state = shared.state.lock();
    match (method, name) {
        (&Method::GET, Some(name)) => match state.leases.get(name) {
            Some(lease) => reply(StatusCode::OK, lease.clone()),
            None => not_found("leases.coordination.k8s.io", name),
        },
        (&Method::POST, None) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if state.leases.contains_key(&name) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                );
            }
            state.revision += 1;
            body["metadata"]["resourceVersion"] = json!(state.revision.to_string());
            state.leases.insert(name, body.clone());
            reply(StatusCode::CREATED, body)
        }
        (&Method::PUT, Some(name)) => {
            let Some(stored) = state.leases.get(name) else {
                return not_found("leases.coordination.k8s.io", name);
            };
            if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                return conflict("leases.coordination.k8s.io", name);
            }
            state.revision += 1;
            body["metadata"]["resourceVersion"] = json!(state.revision.to_string());
            state.leases.insert(name.to_owned(), body.clone());
            reply(StatusCode::OK, body)
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "leases"),
    }
}

fn reply(code: StatusCode, body: Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        Body::from(body.to_string()),
    )
        .into_response()
}

/// A `Status` object, as the API server answers errors.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    reply(code, status_body(code.as_u16(), reason, message))
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code,
    })
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
    )
}

fn conflict(resource: &str, name: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}
