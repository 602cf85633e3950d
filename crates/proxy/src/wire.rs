//! Where the addresses and ports the proxy reasons about meet the sockets it opens, for hosts
//! that cannot give a pod its real ones: the local mesh's loopback mode (no root) gives each
//! pod a 127.x address, and an unprivileged user cannot bind ports below 1024.
//!
//! - [`PortShift`] (`--port-shift N`): every port below 1024 is served and dialled on the wire
//!   at port + N. Everything else keeps seeing the logical port — the container port the
//!   manifests declare — so PeerAuthentication `portLevelMtls`, AuthorizationPolicy `ports`,
//!   routes, clusters and access logs read exactly as they would on Kubernetes. The shift is
//!   applied where the proxy binds or dials inside the mesh, and only there: its per-port
//!   inbound listeners, its connections to the application, and its outbound connections to
//!   mesh endpoints. Destinations outside the mesh are dialled as asked.
//! - [`SourceBind`] (`--outbound-bind IP`): outbound connections leave from the pod's own
//!   address, so the receiving sidecar sees the real source (`ipBlocks`, `source.ip`), as
//!   with a pod's single interface on Kubernetes.
//! - [`reset_on_close`]: a connection that must end with a TCP reset rather than a FIN, as a
//!   client sees a reset when nothing but the kernel stands between it and a server that
//!   refused it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::str::FromStr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Ports below this one need privileges to bind (Linux's default
/// `net.ipv4.ip_unprivileged_port_start`).
pub const PRIVILEGED_BELOW: u16 = 1024;

/// The largest port a shifted one may become.
const HIGHEST_PRIVILEGED: u16 = PRIVILEGED_BELOW - 1;

/// A port shift that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortShiftError {
    /// Not a number.
    #[error("port shift `{0}` is not a number")]
    NotANumber(String),
    /// The shifted ports would still be privileged.
    #[error(
        "port shift {0} is below {PRIVILEGED_BELOW}: shifted ports would still need privileges"
    )]
    TooSmall(u16),
    /// Port 1023 shifted would not be a port.
    #[error("port shift {0} moves port {HIGHEST_PRIVILEGED} past 65535")]
    TooLarge(u16),
}

/// Serves and dials ports below [`PRIVILEGED_BELOW`] at port + offset (see the module docs).
/// The default shifts nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortShift {
    offset: Option<u16>,
}

// === impl PortShift ===

impl PortShift {
    /// No shift: the wire port is the logical port.
    pub const NONE: Self = Self { offset: None };

    /// Ports below 1024 move to port + `offset`; `offset` must leave them unprivileged and
    /// below 65536.
    pub fn new(offset: u16) -> Result<Self, PortShiftError> {
        if offset < PRIVILEGED_BELOW {
            return Err(PortShiftError::TooSmall(offset));
        }
        if HIGHEST_PRIVILEGED.checked_add(offset).is_none() {
            return Err(PortShiftError::TooLarge(offset));
        }
        Ok(Self {
            offset: Some(offset),
        })
    }

    /// The offset, if ports are shifted.
    pub fn offset(self) -> Option<u16> {
        self.offset
    }

    /// The port used on the wire for the logical port `port`. Port 0 (let the kernel choose)
    /// is never shifted.
    pub fn wire(self, port: u16) -> u16 {
        match self.offset {
            // INVARIANT: `new` checked that 1023 + offset fits in a u16.
            Some(offset) if port != 0 && port < PRIVILEGED_BELOW => port.saturating_add(offset),
            _ => port,
        }
    }

    /// [`PortShift::wire`] applied to an address.
    pub fn wire_addr(self, addr: SocketAddr) -> SocketAddr {
        SocketAddr::new(addr.ip(), self.wire(addr.port()))
    }

    /// Two distinct logical ports of `ports` that would share one wire port (a workload that
    /// declares both `p` and `p + offset`), as `(p, p + offset)`.
    pub fn clash(self, ports: &[u16]) -> Option<(u16, u16)> {
        ports.iter().find_map(|&low| {
            let wire = self.wire(low);
            (wire != low && ports.contains(&wire)).then_some((low, wire))
        })
    }
}

impl FromStr for PortShift {
    type Err = PortShiftError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let offset = s
            .trim()
            .parse::<u16>()
            .map_err(|_| PortShiftError::NotANumber(s.to_owned()))?;
        Self::new(offset)
    }
}

/// The local address outbound connections are bound to (see the module docs). The default
/// lets the kernel choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceBind {
    ip: Option<IpAddr>,
}

// === impl SourceBind ===

impl SourceBind {
    /// Outbound connections leave from `ip`.
    pub fn new(ip: IpAddr) -> Self {
        Self { ip: Some(ip) }
    }

    /// The configured address, if any.
    pub fn ip(self) -> Option<IpAddr> {
        self.ip
    }

    /// The address to bind for a connection to `destination`: the configured one when the
    /// kernel can route from it there — same address family, and a loopback source only
    /// towards loopback destinations (a 127.x source cannot leave the machine, and a pod's
    /// traffic to the outside world keeps working).
    pub fn for_destination(self, destination: IpAddr) -> Option<IpAddr> {
        self.ip.filter(|source| {
            source.is_ipv4() == destination.is_ipv4()
                && source.is_loopback() == destination.is_loopback()
        })
    }
}

/// Opens a TCP connection to `destination`, from `source` when given.
pub async fn connect(destination: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if destination.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(destination).await
}

/// Makes the last close of `socket` send a TCP reset instead of a FIN (`SO_LINGER` 0), so the
/// peer sees "connection reset by peer" — what a client sees when a server refuses it. Unsent
/// data is discarded.
pub fn reset_on_close(socket: &impl AsFd) -> io::Result<()> {
    socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_ports_move_by_the_offset_and_others_stay() {
        let shift = PortShift::new(10_000).unwrap();
        assert_eq!(shift.wire(80), 10_080);
        assert_eq!(shift.wire(1), 10_001);
        assert_eq!(shift.wire(1023), 11_023);
        assert_eq!(shift.wire(1024), 1024);
        assert_eq!(shift.wire(5678), 5678);
        assert_eq!(shift.wire(0), 0, "port 0 lets the kernel choose");
        assert_eq!(PortShift::NONE.wire(80), 80);
        assert_eq!(PortShift::default(), PortShift::NONE);
        assert_eq!(
            shift.wire_addr("127.100.0.2:443".parse().unwrap()),
            "127.100.0.2:10443".parse().unwrap()
        );
    }

    #[test]
    fn shifts_that_cannot_work_are_refused() {
        assert_eq!(PortShift::new(80), Err(PortShiftError::TooSmall(80)));
        assert_eq!(
            PortShift::new(65_000),
            Err(PortShiftError::TooLarge(65_000))
        );
        assert_eq!(PortShift::new(64_512).unwrap().wire(1023), 65_535);
        assert_eq!("10000".parse::<PortShift>().unwrap().offset(), Some(10_000));
        assert!(matches!(
            "ten".parse::<PortShift>(),
            Err(PortShiftError::NotANumber(_))
        ));
    }

    #[test]
    fn a_port_and_its_shifted_twin_clash() {
        let shift = PortShift::new(10_000).unwrap();
        assert_eq!(shift.clash(&[80, 10_080]), Some((80, 10_080)));
        assert_eq!(shift.clash(&[10_080, 8080, 80]), Some((80, 10_080)));
        assert_eq!(shift.clash(&[80, 8080, 10_081]), None);
        assert_eq!(PortShift::NONE.clash(&[80, 10_080]), None);
    }

    #[test]
    fn the_source_is_bound_only_where_it_can_route() {
        let bind = SourceBind::new("127.100.0.2".parse().unwrap());
        let pod: IpAddr = "127.100.0.3".parse().unwrap();
        assert_eq!(bind.for_destination(pod), bind.ip());
        assert_eq!(bind.for_destination("93.184.216.34".parse().unwrap()), None);
        assert_eq!(bind.for_destination("::1".parse().unwrap()), None);
        assert_eq!(SourceBind::default().for_destination(pod), None);
    }

    #[tokio::test]
    async fn a_bound_connection_leaves_from_the_bound_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.77".parse().unwrap();
        let client = connect(target, Some(source)).await.unwrap();
        let (_server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), source);
        assert_eq!(client.local_addr().unwrap().ip(), source);
    }

    #[tokio::test]
    async fn reset_on_close_resets_the_peer() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        reset_on_close(&server).unwrap();
        drop(server);
        let mut buf = [0u8; 1];
        let err = client.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
