//! `--proxy-protocol`: the PROXY protocol header (v1 text or v2 binary) a load balancer
//! writes before the client's bytes. Exactly the header is read off the connection (so what
//! follows is left for TLS or HTTP), then checked and decoded by `ppp`.

use std::net::SocketAddr;

use ppp::{v1, v2, HeaderResult};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature (12 bytes); its first 5 tell v2 from v1's `PROXY`.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v2 header's fixed part: signature, version and command, family and protocol, length.
const V2_FIXED: usize = 16;
/// Longest v2 address block accepted (addresses and TLVs: 216 for UNIX sockets, plus the few
/// TLVs load balancers add, such as AWS's VPC endpoint id).
const V2_MAX_BLOCK: usize = 1024;
/// Longest v1 line the specification allows, CRLF included.
const V1_MAX: usize = 107;

/// Why a connection's first bytes are not a PROXY header.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    #[error("PROXY protocol header: {0}")]
    Malformed(String),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header off `io`, and not a byte more. Returns the client's address when the
/// header names one (a proxied TCP connection); `None` for a LOCAL (v2) or UNKNOWN (v1)
/// header, which a load balancer sends for its own health checks.
///
/// # Errors
/// The first bytes are not a header, the header is malformed or too long, or the
/// connection ends.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut header = vec![0u8; 5];
    io.read_exact(&mut header).await?;
    if header == b"PROXY" {
        // Byte by byte up to the line's end: the client's own bytes follow at once.
        while !header.ends_with(b"\r\n") {
            if header.len() >= V1_MAX {
                return Err(ProxyHeaderError::Malformed("v1 line too long".into()));
            }
            header.push(io.read_u8().await?);
        }
    } else if header == V2_SIGNATURE[..5] {
        header.resize(V2_FIXED, 0);
        io.read_exact(&mut header[5..]).await?;
        let block = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if block > V2_MAX_BLOCK {
            return Err(ProxyHeaderError::Malformed(format!(
                "v2 address block of {block} bytes"
            )));
        }
        header.resize(V2_FIXED + block, 0);
        io.read_exact(&mut header[V2_FIXED..]).await?;
    } else {
        return Err(ProxyHeaderError::Missing);
    }
    source(HeaderResult::parse(&header))
}

fn source(header: HeaderResult<'_>) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let malformed = |err: &dyn std::fmt::Display| ProxyHeaderError::Malformed(err.to_string());
    match header {
        HeaderResult::V1(Ok(header)) => Ok(match header.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(header)) => Ok(match (header.command, header.addresses) {
            (v2::Command::Local, _) => None,
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
        }),
        HeaderResult::V1(Err(err)) => Err(malformed(&err)),
        HeaderResult::V2(Err(err)) => Err(malformed(&err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a header off `bytes`; returns the result and what is left unread.
    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut rest = bytes;
        let result = read_header(&mut rest).await;
        (result, rest.to_vec())
    }

    fn v2_header(command: v2::Command, addresses: impl Into<v2::Addresses>) -> Vec<u8> {
        v2::Builder::with_addresses(v2::Version::Two | command, v2::Protocol::Stream, addresses)
            .write_tlv(v2::Type::NoOp, [7u8; 20].as_slice())
            .expect("a TLV")
            .build()
            .expect("a header")
    }

    #[tokio::test]
    async fn v1_and_v2_name_the_client_and_leave_what_follows() {
        let (source, rest) =
            read(b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\nGET / HTTP/1.1").await;
        assert_eq!(
            source.expect("parses"),
            Some("198.51.100.7:40000".parse().expect("addr"))
        );
        assert_eq!(rest, b"GET / HTTP/1.1");

        let (source, rest) =
            read(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n\x16\x03").await;
        assert_eq!(
            source.expect("parses"),
            Some("[2001:db8::7]:40000".parse().expect("addr"))
        );
        assert_eq!(rest, b"\x16\x03");

        let mut bytes = v2_header(
            v2::Command::Proxy,
            v2::IPv4::new([198, 51, 100, 8], [10, 0, 0, 1], 40001, 443),
        );
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        let (source, rest) = read(&bytes).await;
        assert_eq!(
            source.expect("parses"),
            Some("198.51.100.8:40001".parse().expect("addr"))
        );
        assert_eq!(rest, b"PRI * HTTP/2.0");
    }

    #[tokio::test]
    async fn local_and_unknown_name_no_client() {
        let (source, rest) = read(b"PROXY UNKNOWN\r\nGET").await;
        assert_eq!(source.expect("parses"), None);
        assert_eq!(rest, b"GET");
        let bytes = v2_header(
            v2::Command::Local,
            v2::IPv4::new([0, 0, 0, 0], [0, 0, 0, 0], 0, 0),
        );
        assert_eq!(read(&bytes).await.0.expect("parses"), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\n\r\n").await.0,
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            read(b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n").await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let endless = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(
            read(&endless).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read(&huge).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        // Cut short: the connection ended mid-header.
        assert!(matches!(
            read(b"PROXY TCP4 1.2").await.0,
            Err(ProxyHeaderError::Io(_))
        ));
    }
}
