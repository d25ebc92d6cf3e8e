//! The address host candidates advertise (`--public-ip`): given as an IP, discovered through
//! STUN (`auto`), or the Kubernetes node's ExternalIP (`node`), with the node's `status.hostIP`
//! as the last resort (it is usually a private address clients cannot reach).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use webrtc::stun::agent::TransactionId;
use webrtc::stun::message::{Getter, Message, BINDING_REQUEST, BINDING_SUCCESS};
use webrtc::stun::xoraddr::XorMappedAddress;

use crate::config::{non_empty, MediaOptions, PublicIp};

/// How long one STUN server gets to answer (requests are resent within it).
const STUN_TIMEOUT: Duration = Duration::from_secs(3);
/// Binding requests sent to one server before it is given up.
const STUN_ATTEMPTS: u32 = 3;

/// Why the advertised address could not be found.
#[derive(Debug, thiserror::Error)]
pub enum PublicAddressError {
    #[error("--public-ip auto needs --stun-servers (WEBRTC_STUN_SERVERS)")]
    NoStunServer,
    #[error("--public-ip auto: no STUN server answered ({0})")]
    Stun(String),
    #[error("--public-ip node: {0}, and no --host-ip (REMOTEMEDIA_HOST_IP) to fall back on")]
    Node(String),
}

/// Resolves `--public-ip` into the address to advertise (none: the local addresses).
///
/// # Errors
/// `auto` without STUN servers or when none answers; `node` when neither the node's
/// ExternalIP nor `--host-ip` is known.
pub async fn resolve(options: &MediaOptions) -> Result<Option<IpAddr>, PublicAddressError> {
    match options.public_ip {
        None => Ok(None),
        Some(PublicIp::Address(ip)) => Ok(Some(ip)),
        Some(PublicIp::Stun) => {
            let ip = discover_through_stun(&options.stun_servers).await?;
            tracing::info!(%ip, "public address discovered through STUN");
            Ok(Some(ip))
        }
        Some(PublicIp::Node) => {
            let external = match options.node_name.as_deref() {
                None => Err("no --node-name (REMOTEMEDIA_NODE_NAME) to look up".to_owned()),
                Some(node) => match kube::Client::try_default().await {
                    Ok(client) => node_external_ip(client, node).await,
                    Err(err) => Err(format!("no Kubernetes API client: {err}")),
                },
            };
            let ip = choose_node_address(external, options.host_ip)?;
            tracing::info!(%ip, "public address from the node");
            Ok(Some(ip))
        }
    }
}

/// `--public-ip node`'s choice: the node's ExternalIP when the API gave one, else the host IP
/// (with a warning: clients outside the cluster network rarely reach it), else an error
/// saying why the ExternalIP is missing.
///
/// # Errors
/// `Node` when there is neither.
pub fn choose_node_address(
    external: Result<Option<IpAddr>, String>,
    host_ip: Option<IpAddr>,
) -> Result<IpAddr, PublicAddressError> {
    let why = match external {
        Ok(Some(ip)) => return Ok(ip),
        Ok(None) => "the node has no ExternalIP address".to_owned(),
        Err(why) => why,
    };
    match host_ip {
        Some(ip) => {
            tracing::warn!(
                reason = why,
                %ip,
                "advertising the node's host IP: clients outside its network may not reach it"
            );
            Ok(ip)
        }
        None => Err(PublicAddressError::Node(why)),
    }
}

/// The ExternalIP of `node` (IPv4 preferred), read through the Kubernetes API; `Ok(None)`
/// when the node has none. Needs `get` on `nodes` (a ClusterRole).
///
/// # Errors
/// The API's answer, as text, when the read fails.
pub async fn node_external_ip(client: kube::Client, node: &str) -> Result<Option<IpAddr>, String> {
    let node = kube::Api::<Node>::all(client)
        .get(node)
        .await
        .map_err(|err| format!("reading node {node:?}: {err}"))?;
    let external: Vec<IpAddr> = node
        .status
        .and_then(|status| status.addresses)
        .unwrap_or_default()
        .into_iter()
        .filter(|address| address.type_ == "ExternalIP")
        .filter_map(|address| address.address.parse().ok())
        .collect();
    Ok(external
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(external.first())
        .copied())
}

/// The mapped address the first answering STUN server (`stun:host[:port]`, port 3478 by
/// default) sees for a UDP socket of this host.
///
/// # Errors
/// `NoStunServer` when none is configured; `Stun` naming what each server did.
pub async fn discover_through_stun(servers: &[String]) -> Result<IpAddr, PublicAddressError> {
    let mut failures = Vec::new();
    for server in non_empty(servers) {
        match stun_mapped_address(server).await {
            Ok(address) => return Ok(address.ip()),
            Err(why) => failures.push(format!("{server}: {why}")),
        }
    }
    if failures.is_empty() {
        return Err(PublicAddressError::NoStunServer);
    }
    Err(PublicAddressError::Stun(failures.join("; ")))
}

/// One Binding request/response exchange with `server`.
async fn stun_mapped_address(server: &str) -> Result<SocketAddr, String> {
    let host_port = server
        .strip_prefix("stun:")
        .ok_or("not a stun: URL")?
        .split('?')
        .next()
        .unwrap_or_default();
    let with_port = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:3478")
    };
    let target = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("resolving {with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{with_port} has no address"))?;
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("binding a UDP socket: {e}"))?;
    let mut request = Message::new();
    request
        .build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1500];
    for _ in 0..STUN_ATTEMPTS {
        socket
            .send_to(&request.raw, target)
            .await
            .map_err(|e| format!("sending to {target}: {e}"))?;
        let wait = STUN_TIMEOUT / STUN_ATTEMPTS;
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let (n, from) = received.map_err(|e| format!("receiving: {e}"))?;
            if from != target {
                continue;
            }
            let mut response = Message::new();
            response.raw = buf[..n].to_vec();
            if response.decode().is_err()
                || response.transaction_id != request.transaction_id
                || response.typ != BINDING_SUCCESS
            {
                continue;
            }
            let mut mapped = XorMappedAddress::default();
            mapped
                .get_from(&response)
                .map_err(|e| format!("no XOR-MAPPED-ADDRESS: {e}"))?;
            return Ok(SocketAddr::new(mapped.ip, mapped.port));
        }
    }
    Err(format!("no answer from {target} in {STUN_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXTERNAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));
    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    #[test]
    fn the_external_ip_wins_over_the_host_ip() {
        assert_eq!(
            choose_node_address(Ok(Some(EXTERNAL)), Some(HOST)).unwrap(),
            EXTERNAL
        );
        assert_eq!(
            choose_node_address(Ok(Some(EXTERNAL)), None).unwrap(),
            EXTERNAL
        );
    }

    #[test]
    fn the_host_ip_is_the_last_resort() {
        assert_eq!(choose_node_address(Ok(None), Some(HOST)).unwrap(), HOST);
        assert_eq!(
            choose_node_address(Err("forbidden".into()), Some(HOST)).unwrap(),
            HOST
        );
    }

    #[test]
    fn without_either_the_error_says_why() {
        let err = choose_node_address(Err("reading node \"n1\": forbidden".into()), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("forbidden") && err.contains("--host-ip"),
            "{err}"
        );
        let err = choose_node_address(Ok(None), None).unwrap_err().to_string();
        assert!(err.contains("no ExternalIP"), "{err}");
    }

    #[tokio::test]
    async fn auto_without_stun_servers_is_an_error() {
        assert!(matches!(
            discover_through_stun(&[String::new()]).await,
            Err(PublicAddressError::NoStunServer)
        ));
    }
}
