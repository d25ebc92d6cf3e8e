//! `--max-connections-per-address`: how many connections each client address holds, as
//! slots that free themselves when their connection is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Connections held per client address, shared by the listeners of one process.
#[derive(Debug)]
pub struct ConnectionCap {
    /// Most connections per address; 0: no cap.
    max: usize,
    /// Addresses holding at least one connection (an address at zero is removed, so the map
    /// is as large as the set of connected clients, never the set of clients ever seen).
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address' count, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    cap: Arc<ConnectionCap>,
    key: IpAddr,
}

/// The address already holds `--max-connections-per-address` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl ConnectionCap {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn is_on(&self) -> bool {
        self.max > 0
    }

    /// A slot for one more connection from `address`; `None` with the cap off.
    ///
    /// # Errors
    /// [`Full`] when the address (its /64, for IPv6) holds the maximum already.
    pub fn acquire(self: &Arc<Self>, address: IpAddr) -> Result<Option<Slot>, Full> {
        if !self.is_on() {
            return Ok(None);
        }
        let key = key(address);
        let mut held = self.held.lock();
        let count = held.entry(key).or_insert(0);
        if *count >= self.max {
            return Err(Full);
        }
        *count += 1;
        Ok(Some(Slot {
            cap: Arc::clone(self),
            key,
        }))
    }

    /// Connections `address` holds now.
    pub fn held(&self, address: IpAddr) -> usize {
        self.held.lock().get(&key(address)).copied().unwrap_or(0)
    }

    /// Addresses holding a connection now.
    pub fn addresses(&self) -> usize {
        self.held.lock().len()
    }

    fn release(&self, key: IpAddr) {
        let mut held = self.held.lock();
        if let Some(count) = held.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&key);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.cap.release(self.key);
    }
}

/// What a client is counted under: an IPv4 address (an IPv4-mapped IPv6 one as IPv4), or the
/// /64 of an IPv6 address, since one subscriber is usually given a whole /64.
pub fn key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn an_address_holds_at_most_max_and_a_dropped_slot_frees_its_place() {
        let cap = ConnectionCap::new(2);
        let a = cap
            .acquire(ip("192.0.2.1"))
            .expect("first")
            .expect("a slot");
        let b = cap
            .acquire(ip("192.0.2.1"))
            .expect("second")
            .expect("a slot");
        assert_eq!(cap.acquire(ip("192.0.2.1")).err(), Some(Full));
        // Another address has its own count.
        let other = cap.acquire(ip("192.0.2.2")).expect("another address");
        assert_eq!(cap.held(ip("192.0.2.1")), 2);
        drop(a);
        assert_eq!(cap.held(ip("192.0.2.1")), 1);
        let _c = cap
            .acquire(ip("192.0.2.1"))
            .expect("a freed place is taken again");
        drop((b, other));
        assert_eq!(cap.addresses(), 1);
    }

    #[test]
    fn addresses_at_zero_leave_the_map() {
        let cap = ConnectionCap::new(1);
        for n in 0..1000u32 {
            let slot = cap.acquire(IpAddr::from(n.to_be_bytes())).expect("a slot");
            drop(slot);
        }
        assert_eq!(cap.addresses(), 0);
    }

    #[test]
    fn off_means_no_slot_and_no_count() {
        let cap = ConnectionCap::new(0);
        for _ in 0..10 {
            assert!(cap.acquire(ip("192.0.2.1")).expect("never full").is_none());
        }
        assert_eq!(cap.addresses(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let cap = ConnectionCap::new(1);
        let _a = cap.acquire(ip("2001:db8:1:2::1")).expect("first");
        assert_eq!(cap.acquire(ip("2001:db8:1:2:ffff::9")).err(), Some(Full));
        let _b = cap.acquire(ip("2001:db8:1:3::1")).expect("another /64");
        let _c = cap.acquire(ip("198.51.100.1")).expect("first");
        assert_eq!(cap.acquire(ip("::ffff:198.51.100.1")).err(), Some(Full));
    }
}
