//! Binding the TCP listeners (signaling, HTTP, the worker API, the controller's HTTP), with
//! an error that names which one failed and on what address.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::error::Error;

/// Binds `address` for the listener called `what` in the error.
///
/// # Errors
/// [`Error::Bind`] when the address is in use or not ours.
pub async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Bind {
            what,
            address,
            source,
        })
}
