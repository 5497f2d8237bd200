//! Pluggable byte streams between nodes.
//!
//! The transport speaks frames over any [`PeerStream`]. Who produces the
//! stream is a [`Dialer`] on the calling side and a [`Listener`] (by default
//! TCP through an [`Acceptor`]) on the listening side: plain TCP by default (or TLS, which the `cairn` facade
//! plugs in here), and whatever a test puts
//! in between — a fault-injecting wrapper ([`LinkControl`]), a userspace
//! proxy on another port, or a simulated network — without touching the
//! Raft code.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::Context;
use std::task::Poll;

use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;

/// A node id on the wire.
pub type PeerId = u64;

/// A bidirectional byte stream to a peer.
pub trait PeerStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PeerStream for T {}

/// Boxed future returned by [`Dialer::dial`].
pub type DialFuture = Pin<Box<dyn Future<Output = io::Result<Box<dyn PeerStream>>> + Send>>;

/// Opens streams to peers.
pub trait Dialer: Send + Sync + 'static {
    /// Connect from this node to `target` at `addr`.
    fn dial(&self, target: PeerId, addr: &str) -> DialFuture;
}

/// Boxed future returned by [`Acceptor::accept`].
pub type AcceptFuture = Pin<Box<dyn Future<Output = io::Result<Accepted>> + Send>>;

/// What an accepted connection has proven about the node at the other end.
///
/// Requests name their sender (a vote its candidate, an append its leader,
/// an application message its `from`), and forwarded writes may speak for a
/// node; the server refuses any request whose sender this identity cannot
/// speak for, so a machine holding node 2's certificate cannot vote, lead,
/// heartbeat or report as node 3 (docs/API.md, "Trust model: the peer
/// channel").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// Nothing proven yet (plain TCP, a bench without `[tls]`). The server
    /// binds such a connection to the id of its hello
    /// ([`PeerIdentity::Claimed`]) before serving any request.
    Unverified,
    /// Plaintext: the node id the dialer's hello named. Unauthenticated
    /// (anyone on the network can say it), but the connection speaks for
    /// that one node only, so a buggy node cannot speak for another.
    Claimed(PeerId),
    /// The peer's certificate, verified against the cluster CA, names these
    /// node ids (never empty: such a certificate is refused at the handshake).
    Nodes(BTreeSet<PeerId>),
}

impl PeerIdentity {
    /// May this connection carry requests sent by node `claimed`?
    pub fn may_speak_for(&self, claimed: PeerId) -> bool {
        match self {
            Self::Unverified => true,
            Self::Claimed(id) => *id == claimed,
            Self::Nodes(ids) => ids.contains(&claimed),
        }
    }

    /// The identity a connection is served with once its hello named
    /// `hello_from`: a certificate's ids stand (the hello is only a claim;
    /// a native client's hello names no node at all), and a connection that
    /// proved nothing is bound to the hello's id.
    pub fn bind(self, hello_from: PeerId) -> Self {
        match self {
            Self::Unverified => Self::Claimed(hello_from),
            proven => proven,
        }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unverified => f.write_str("unverified"),
            Self::Claimed(id) => write!(f, "node {id} (plaintext hello, unauthenticated)"),
            Self::Nodes(ids) => {
                let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                write!(f, "node {}", ids.join(", node "))
            }
        }
    }
}

/// An accepted connection, ready for frames, and who it was proven to be.
pub struct Accepted {
    /// The (possibly TLS-wrapped) stream.
    pub stream: Box<dyn PeerStream>,
    /// Who the peer proved to be.
    pub identity: PeerIdentity,
}

/// Turns an accepted TCP connection into a peer stream: the server-side
/// counterpart of [`Dialer`], where TLS (or a test's fault) goes.
///
/// Called on the connection's own task, so a slow or hostile handshake never
/// stalls the accept loop. An error closes the connection; the server logs it
/// with the peer's address (e.g. a certificate from another CA). On success
/// it says which node ids the peer proved it is ([`PeerIdentity`]).
pub trait Acceptor: Send + Sync + 'static {
    /// Wrap `stream`, accepted from `peer`.
    fn accept(&self, stream: tokio::net::TcpStream, peer: std::net::SocketAddr) -> AcceptFuture;
}

/// Boxed future returned by [`Listener::accept`]: the next connection's
/// handshake (to run on the connection's own task) and the peer's address.
pub type ListenFuture<'a> = Pin<Box<dyn Future<Output = io::Result<(AcceptFuture, std::net::SocketAddr)>> + Send + 'a>>;

/// Where a node's transport server takes its peer connections from: the
/// listening counterpart of [`Dialer`].
///
/// Production listens on TCP ([`TcpPeerListener`], which hands every
/// accepted socket to an [`Acceptor`]); a simulation listens on its own
/// network. `accept` returns as soon as a connection arrives; the returned
/// handshake runs on the connection's own task, so a slow peer never stalls
/// the accept loop.
pub trait Listener: Send + 'static {
    /// Wait for the next connection.
    fn accept(&mut self) -> ListenFuture<'_>;
}

/// A TCP listener whose connections go through an [`Acceptor`] (plain or
/// TLS), with `TCP_NODELAY` set on each.
pub struct TcpPeerListener {
    listener: tokio::net::TcpListener,
    acceptor: Arc<dyn Acceptor>,
}

impl TcpPeerListener {
    /// Serve connections accepted on `listener` through `acceptor`.
    pub fn new(listener: tokio::net::TcpListener, acceptor: Arc<dyn Acceptor>) -> Self {
        Self { listener, acceptor }
    }
}

impl Listener for TcpPeerListener {
    fn accept(&mut self) -> ListenFuture<'_> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((self.acceptor.accept(stream, peer), peer))
        })
    }
}

/// Plain TCP: the stream as accepted, its peer [`PeerIdentity::Unverified`].
#[derive(Clone, Debug, Default)]
pub struct PlainAcceptor;

impl Acceptor for PlainAcceptor {
    fn accept(&self, stream: tokio::net::TcpStream, _peer: std::net::SocketAddr) -> AcceptFuture {
        Box::pin(async move {
            Ok(Accepted {
                stream: Box::new(stream),
                identity: PeerIdentity::Unverified,
            })
        })
    }
}

/// Plain TCP with `TCP_NODELAY` (Raft messages are small and latency-bound).
#[derive(Clone, Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, _target: PeerId, addr: &str) -> DialFuture {
        let addr = addr.to_string();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn PeerStream>)
        })
    }
}

/// Dials some peers at other addresses than membership says: how a chaos
/// test puts a userspace proxy on each directed link between real
/// processes (`peer_dial_overrides` in the node config).
pub struct OverrideDialer {
    inner: Arc<dyn Dialer>,
    overrides: std::collections::BTreeMap<PeerId, String>,
}

impl OverrideDialer {
    /// Wrap `inner`, dialling `overrides[peer]` instead of a peer's address.
    pub fn new(inner: Arc<dyn Dialer>, overrides: std::collections::BTreeMap<PeerId, String>) -> Self {
        Self { inner, overrides }
    }
}

impl Dialer for OverrideDialer {
    fn dial(&self, target: PeerId, addr: &str) -> DialFuture {
        let addr = self.overrides.get(&target).map(String::as_str).unwrap_or(addr);
        self.inner.dial(target, addr)
    }
}

/// Cuts links on demand, for partition tests in one process.
///
/// Wraps another dialer: a dial to a blocked peer fails, and a stream that
/// is already open starts failing reads and writes the moment its link is
/// blocked, exactly like a cable pulled mid-conversation.
#[derive(Clone)]
pub struct LinkControl {
    inner: Arc<dyn Dialer>,
    blocked: Arc<Mutex<BTreeSet<PeerId>>>,
}

impl LinkControl {
    /// Wrap `inner`; all links start open.
    pub fn new(inner: Arc<dyn Dialer>) -> Self {
        Self {
            inner,
            blocked: Arc::default(),
        }
    }

    /// Block (`true`) or open (`false`) the link to `peer`.
    pub fn set_blocked(&self, peer: PeerId, blocked: bool) {
        let mut set = crate::sync::lock(&self.blocked);
        if blocked {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }

    fn is_blocked(blocked: &Mutex<BTreeSet<PeerId>>, peer: PeerId) -> bool {
        crate::sync::lock(blocked).contains(&peer)
    }
}

impl Dialer for LinkControl {
    fn dial(&self, target: PeerId, addr: &str) -> DialFuture {
        if Self::is_blocked(&self.blocked, target) {
            return Box::pin(async move {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("link to {target} is cut"),
                ))
            });
        }
        let fut = self.inner.dial(target, addr);
        let blocked = self.blocked.clone();
        Box::pin(async move {
            let inner = fut.await?;
            Ok(Box::new(Cuttable {
                inner,
                blocked,
                peer: target,
            }) as Box<dyn PeerStream>)
        })
    }
}

struct Cuttable {
    inner: Box<dyn PeerStream>,
    blocked: Arc<Mutex<BTreeSet<PeerId>>>,
    peer: PeerId,
}

impl Cuttable {
    fn check(&self) -> io::Result<()> {
        if LinkControl::is_blocked(&self.blocked, self.peer) {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "link cut"))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Cuttable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
