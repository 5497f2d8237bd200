//! The real framed transport over turmoil's simulated TCP.
//!
//! cairn-raft speaks frames over any byte stream ([`Dialer`] and
//! [`Listener`] are its seams); here both ends are `turmoil::net` sockets,
//! so partitions, held links, latency and crashes come from the simulated
//! network while every byte is still encoded, framed and decoded by the
//! node's own code. No TLS: peers are [`PeerIdentity::Unverified`], as with
//! plain TCP in production.

use cairn_raft::transport::AcceptFuture;
use cairn_raft::transport::DialFuture;
use cairn_raft::transport::ListenFuture;
use cairn_raft::transport::PeerId;
use cairn_raft::transport::PeerStream;
use cairn_raft::Accepted;
use cairn_raft::Dialer;
use cairn_raft::Listener;
use cairn_raft::PeerIdentity;

/// Accepts peers on a simulated host's port.
pub struct SimListener(pub turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> ListenFuture<'_> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            let handshake: AcceptFuture = Box::pin(async move {
                Ok(Accepted {
                    stream: Box::new(stream),
                    identity: PeerIdentity::Unverified,
                })
            });
            Ok((handshake, peer))
        })
    }
}

/// Dials peers by their simulated host name (`n2:9000`).
pub struct SimDialer;

impl Dialer for SimDialer {
    fn dial(&self, _target: PeerId, addr: &str) -> DialFuture {
        let addr = addr.to_string();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            Ok(Box::new(stream) as Box<dyn PeerStream>)
        })
    }
}
