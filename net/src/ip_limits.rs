//! Inbound connections per IP address. Peer ids are free, so a limit per
//! peer does not stop one machine from opening thousands of connections
//! under fresh identities; a limit per source address does.
//!
//! [`IpCounter`] is the plain state (tested alone); [`Behaviour`] is the
//! thin libp2p shell that asks it at each inbound connection, before the
//! handshake, and tells it when connections end.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// The limit on inbound connections from one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLimit {
    /// Connections (pending or established) one IP address may have open
    /// to this node at once.
    pub max_per_ip: usize,
    /// Loopback addresses are not counted (a devnet runs every node and
    /// client on 127.0.0.1).
    pub exempt_loopback: bool,
}

/// A connection refused for its address.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {open} connections open to this node (limit {max})")]
pub struct TooManyFromIp {
    /// The address.
    pub ip: IpAddr,
    /// Its connections open.
    pub open: usize,
    /// The limit.
    pub max: usize,
}

/// Connections open per address.
#[derive(Debug)]
pub struct IpCounter {
    limit: IpLimit,
    open: HashMap<IpAddr, usize>,
    by_connection: HashMap<ConnectionId, IpAddr>,
}

impl IpCounter {
    /// A counter enforcing `limit`.
    pub fn new(limit: IpLimit) -> Self {
        Self { limit, open: HashMap::new(), by_connection: HashMap::new() }
    }

    /// Admits connection `id` from `ip`, or refuses it.
    pub fn admit(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), TooManyFromIp> {
        if self.limit.exempt_loopback && ip.is_loopback() {
            return Ok(());
        }
        let open = self.open.entry(ip).or_default();
        if *open >= self.limit.max_per_ip {
            return Err(TooManyFromIp { ip, open: *open, max: self.limit.max_per_ip });
        }
        *open += 1;
        self.by_connection.insert(id, ip);
        Ok(())
    }

    /// Connection `id` ended (or never completed).
    pub fn closed(&mut self, id: ConnectionId) {
        let Some(ip) = self.by_connection.remove(&id) else { return };
        if let Some(n) = self.open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&ip);
            }
        }
    }

    /// Connections counted for `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open.get(&ip).copied().unwrap_or(0)
    }
}

/// The IP address a multiaddr starts with.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(a) => Some(a.into()),
        Protocol::Ip6(a) => Some(a.into()),
        _ => None,
    }
}

/// Refuses inbound connections beyond the per-IP limit.
#[derive(Debug)]
pub struct Behaviour {
    counter: Option<IpCounter>,
}

impl Behaviour {
    /// Enforces `limit`; `None` admits everything.
    pub fn new(limit: Option<IpLimit>) -> Self {
        Self { counter: limit.map(IpCounter::new) }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let (Some(counter), Some(ip)) = (self.counter.as_mut(), ip_of(remote)) else { return Ok(()) };
        counter.admit(id, ip).map_err(|e| {
            tracing::debug!(error = %e, "inbound connection refused");
            ConnectionDenied::new(e)
        })
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let Some(counter) = self.counter.as_mut() else { return };
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => counter.closed(connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_count_and_closing_frees_a_slot() {
        let mut c = IpCounter::new(IpLimit { max_per_ip: 2, exempt_loopback: true });
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().expect("ip"), "2001:db8::1".parse().expect("ip"));
        let ids: Vec<ConnectionId> = (0..6).map(|_| ConnectionId::new_unchecked(rand_id())).collect();
        c.admit(ids[0], a).expect("first");
        c.admit(ids[1], a).expect("second");
        let e = c.admit(ids[2], a).expect_err("third from one address");
        assert_eq!((e.open, e.max), (2, 2));
        c.admit(ids[3], b).expect("another address is not affected");
        c.closed(ids[0]);
        c.closed(ids[2]); // refused: never counted
        assert_eq!(c.open(a), 1);
        c.admit(ids[4], a).expect("a slot was freed");
        for _ in 0..10 {
            c.admit(ids[5], "127.0.0.1".parse().expect("ip")).expect("loopback is exempt");
        }
        let mut strict = IpCounter::new(IpLimit { max_per_ip: 1, exempt_loopback: false });
        strict.admit(ids[0], "127.0.0.1".parse().expect("ip")).expect("first");
        assert!(strict.admit(ids[1], "127.0.0.1".parse().expect("ip")).is_err());
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn addresses_are_read_from_multiaddrs() {
        let a: Multiaddr = "/ip4/192.0.2.7/udp/4001/quic-v1".parse().expect("addr");
        assert_eq!(ip_of(&a), Some("192.0.2.7".parse().expect("ip")));
        let b: Multiaddr = "/ip6/::1/tcp/1".parse().expect("addr");
        assert_eq!(ip_of(&b), Some("::1".parse().expect("ip")));
        let c: Multiaddr = "/dns4/example.org/tcp/1".parse().expect("addr");
        assert_eq!(ip_of(&c), None);
    }
}
