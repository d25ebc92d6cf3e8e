//! The cluster (DESIGN.md §5, §6): state in Redis (the peer registry, pending offers and
//! notification delivery shared by every replica, behind the same traits as the in-memory
//! versions), media workers and their heartbeats, placement, and the controller.

pub mod autoscale;
pub mod controller;
mod fence;
mod keys;
pub mod kubernetes;
pub mod metrics;
pub mod placement;
pub mod process_load;
mod redis_bus;
mod redis_client;
mod redis_registry;
mod remote_host;
pub mod room_record;
mod room_span;
pub mod scale_down;
mod worker;
mod worker_auth;
pub mod worker_id;
mod worker_rooms;
mod worker_service;
mod worker_tls;
pub mod workers;

pub use controller::Controller;
pub use keys::Keys;
pub use redis_bus::RedisBus;
pub use redis_registry::RedisRegistry;
pub use remote_host::RemoteSessionHost;
pub use worker::{local_api_address, request_drain, request_undrain, Worker};
pub use worker_auth::{AttachToken, RequireToken};
pub use worker_service::{DrainState, WorkerService};
pub use worker_tls::{worker_endpoint, WorkerTlsClient};

/// Counts and logs a failed Redis command; callers carry on (Redis is not in the liveness path).
pub(crate) fn redis_error(operation: &'static str, err: &redis::RedisError) {
    debug_assert!(
        metrics::REDIS_OPERATIONS.contains(&operation),
        "{operation} is missing from REDIS_OPERATIONS (its series would not show at zero)"
    );
    metrics::metrics()
        .redis_errors
        .with_label_values(&[operation])
        .inc();
    tracing::warn!(operation, %err, "Redis command failed");
}

pub use redis_client::{connect, redact_url, ClusterError};
