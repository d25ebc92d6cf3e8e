//! `--trusted-proxies`: the networks whose word is taken for a client's address, and the
//! client address an `X-Forwarded-For` chain names through them.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Networks of the proxies and load balancers in front of this server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR networks (`10.0.0.0/8,192.0.2.7`);
    /// empty entries are skipped.
    ///
    /// # Errors
    /// An entry that is neither.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client behind `X-Forwarded-For` (the values of every such header, in order): the
    /// rightmost entry that is not one of these proxies (what a client writes itself is
    /// further left, so it is never believed). `None` when there is no such header, every
    /// entry is a proxy, or an entry is not an address.
    pub fn forwarded_client<'a>(
        &self,
        forwarded: impl IntoIterator<Item = &'a str>,
    ) -> Option<IpAddr> {
        let entries: Vec<&str> = forwarded
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for entry in entries.into_iter().rev() {
            let address = parse_entry(entry)?;
            if !self.contains(address) {
                return Some(address);
            }
        }
        None
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`[v6]:port`, `v4:port`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(values: &'a [&'a str]) -> impl Iterator<Item = &'a str> {
        values.iter().copied()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn parses_addresses_and_networks() {
        let trusted =
            TrustedProxies::parse("10.0.0.0/8, 192.0.2.7,,2001:db8::/32").expect("parses");
        assert!(trusted.contains(ip("10.1.2.3")));
        assert!(trusted.contains(ip("::ffff:10.1.2.3")));
        assert!(trusted.contains(ip("192.0.2.7")));
        assert!(!trusted.contains(ip("192.0.2.8")));
        assert!(trusted.contains(ip("2001:db8::5")));
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
        let err = TrustedProxies::parse("10.0.0.0/8,proxy.local").unwrap_err();
        assert!(err.contains("proxy.local"), "{err}");
    }

    #[test]
    fn the_client_is_the_rightmost_entry_that_is_not_a_proxy() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").expect("parses");
        // A client that writes its own header cannot choose its key: the proxy appends.
        let forged = headers(&["198.51.100.1, 203.0.113.9"]);
        assert_eq!(trusted.forwarded_client(forged), Some(ip("203.0.113.9")));
        // Through two proxies, over two header lines, with ports.
        let chain = headers(&["203.0.113.9:5555", "10.0.0.2, 10.0.0.3"]);
        assert_eq!(trusted.forwarded_client(chain), Some(ip("203.0.113.9")));
        let v6 = headers(&["[2001:db8::1]:443"]);
        assert_eq!(trusted.forwarded_client(v6), Some(ip("2001:db8::1")));
        // Nothing to believe.
        assert_eq!(trusted.forwarded_client(headers(&[])), None);
        assert_eq!(trusted.forwarded_client(headers(&["10.0.0.2"])), None);
        assert_eq!(
            trusted.forwarded_client(headers(&["203.0.113.9, garbage"])),
            None
        );
    }
}
