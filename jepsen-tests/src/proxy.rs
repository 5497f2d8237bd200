//! A userspace TCP proxy on one directed peer link (node A dials node B
//! through it), with faults switched at run time.
//!
//! Every node's config sets `peer_dial_overrides` so it dials each peer
//! through that link's proxy. A connection carries A's requests to B and
//! B's answers back, so cutting link A→B silences both directions of what A
//! starts; B's own connections to A go through the B→A proxy.
//!
//! Faults ([`LinkFaults`]):
//! - `cut`: existing connections are closed; new ones are accepted and then
//!   held without forwarding a byte (a black hole, as a pulled cable looks
//!   to TCP) until the link heals, when they are closed so the node redials.
//! - `delay_ms` (+ `jitter_ms`): every chunk is forwarded that much later,
//!   in order (a FIFO delay line per direction).
//! - `drop_per_mille`: each forwarded chunk has this chance of killing the
//!   connection instead — what heavy packet loss looks like above TCP.
//!   (Dropping bytes inside a TCP stream would be a corruption fault, which
//!   TCP's checksums make unrealistic.)

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;

/// Chunks in flight on one direction's delay line. Bounded so a delayed
/// link pushes back on the sender (as a slow network does) instead of
/// buffering without limit: 1024 × 16 KiB is at most 16 MiB per direction.
const DELAY_LINE_CHUNKS: usize = 1024;
/// Largest chunk read at once.
const CHUNK_BYTES: usize = 16 << 10;
/// How long the proxy waits to connect upstream; a LAN connect takes
/// microseconds, so longer means the peer is down or stopped.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The faults on one link. The default passes everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Partitioned: nothing gets through.
    pub cut: bool,
    /// Added one-way latency.
    pub delay_ms: u64,
    /// Extra random latency in `0..jitter_ms` (order is kept).
    pub jitter_ms: u64,
    /// Chance per chunk, in thousandths, that the connection is killed.
    pub drop_per_mille: u32,
}

/// A running proxy for one directed link. Dropping it stops it and closes
/// its connections.
pub struct LinkProxy {
    listen_addr: SocketAddr,
    faults: watch::Sender<LinkFaults>,
    shutdown: watch::Sender<bool>,
}

impl LinkProxy {
    /// Listen on a free loopback port and forward to `upstream`. `seed`
    /// drives the random drops and jitter.
    pub async fn start(upstream: String, seed: u64) -> Result<Self, Error> {
        Self::start_on("127.0.0.1", upstream, seed).await
    }

    /// Listen on a free port of `ip` (the host's bridge address in netns
    /// mode) and forward to `upstream`.
    pub async fn start_on(ip: &str, upstream: String, seed: u64) -> Result<Self, Error> {
        let listener = TcpListener::bind((ip, 0))
            .await
            .map_err(Error::io("bind a proxy listener"))?;
        let listen_addr = listener.local_addr().map_err(Error::io("proxy listener address"))?;
        let (faults, faults_rx) = watch::channel(LinkFaults::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, upstream, faults_rx, shutdown_rx, seed));
        Ok(Self {
            listen_addr,
            faults,
            shutdown,
        })
    }

    /// Where nodes dial this link.
    pub fn addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Change the faults; connections react at once.
    pub fn set(&self, faults: LinkFaults) {
        self.faults.send_replace(faults);
    }

    /// The current faults.
    pub fn faults(&self) -> LinkFaults {
        *self.faults.borrow()
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    faults: watch::Receiver<LinkFaults>,
    mut shutdown: watch::Receiver<bool>,
    seed: u64,
) {
    let mut conn_no: u64 = 0;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((down, _)) = accepted else {
            // Out of descriptors or similar: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        conn_no += 1;
        let _ = down.set_nodelay(true);
        tokio::spawn(connection(
            down,
            upstream.clone(),
            faults.clone(),
            shutdown.clone(),
            seed.wrapping_add(conn_no.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        ));
    }
}

/// Resolves when the link is cut (or immediately if it is), or the proxy stops.
async fn until_cut(faults: &mut watch::Receiver<LinkFaults>, shutdown: &mut watch::Receiver<bool>) {
    loop {
        if faults.borrow_and_update().cut || *shutdown.borrow_and_update() {
            return;
        }
        tokio::select! {
            r = faults.changed() => if r.is_err() { return },
            r = shutdown.changed() => if r.is_err() { return },
        }
    }
}

/// Resolves when the link heals, or the proxy stops.
async fn until_healed(faults: &mut watch::Receiver<LinkFaults>, shutdown: &mut watch::Receiver<bool>) {
    loop {
        if !faults.borrow_and_update().cut || *shutdown.borrow_and_update() {
            return;
        }
        tokio::select! {
            r = faults.changed() => if r.is_err() { return },
            r = shutdown.changed() => if r.is_err() { return },
        }
    }
}

async fn connection(
    down: TcpStream,
    upstream: String,
    mut faults: watch::Receiver<LinkFaults>,
    mut shutdown: watch::Receiver<bool>,
    seed: u64,
) {
    if faults.borrow().cut {
        // Black hole: hold the connection, forward nothing, close on heal.
        until_healed(&mut faults, &mut shutdown).await;
        return;
    }
    let up = match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(&upstream)).await {
        Ok(Ok(s)) => s,
        // Peer down: close, so the dialler sees a failed connection.
        _ => return,
    };
    let _ = up.set_nodelay(true);
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let there = pump(dr, uw, faults.clone(), StdRng::seed_from_u64(seed));
    let back = pump(ur, dw, faults.clone(), StdRng::seed_from_u64(seed ^ 1));
    tokio::select! {
        _ = there => {}
        _ = back => {}
        _ = until_cut(&mut faults, &mut shutdown) => {}
    }
    // Dropping the halves closes both sockets.
}

/// Copy one direction through the delay line until EOF, an error, or a
/// random drop.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    faults: watch::Receiver<LinkFaults>,
    mut rng: StdRng,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(DELAY_LINE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut last_due = Instant::now();
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let f = *faults.borrow();
            if f.drop_per_mille > 0 && rng.random_range(0..1000) < f.drop_per_mille {
                return;
            }
            let mut delay = f.delay_ms;
            if f.jitter_ms > 0 {
                delay += rng.random_range(0..f.jitter_ms);
            }
            // Never before the previous chunk: TCP delivers in order.
            let due = (Instant::now() + Duration::from_millis(delay)).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Result<Vec<u8>, String> {
        s.write_all(msg).await.map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; msg.len()];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Err(_) => Err("timed out".into()),
            Ok(Err(e)) => Err(format!("read: {e}")),
            Ok(Ok(_)) => Ok(buf),
        }
    }

    #[tokio::test]
    async fn passes_then_cuts_then_heals() {
        let p = LinkProxy::start(echo_server().await, 1).await.unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        tracing::info!("a healthy link echoes");
        assert_eq!(
            roundtrip(&mut s, b"hello", Duration::from_secs(5)).await.unwrap(),
            b"hello"
        );

        tracing::info!("cutting closes the open connection");
        p.set(LinkFaults {
            cut: true,
            ..Default::default()
        });
        let got = roundtrip(&mut s, b"again", Duration::from_secs(5)).await;
        assert!(got.is_err(), "a cut link still echoed: {got:?}");

        tracing::info!("a new connection during the cut is a black hole");
        let mut s2 = TcpStream::connect(p.addr()).await.unwrap();
        let got = roundtrip(&mut s2, b"lost", Duration::from_millis(300)).await;
        assert_eq!(got, Err("timed out".to_string()));

        tracing::info!("healing closes the black hole; a new connection works");
        p.set(LinkFaults::default());
        let mut buf = [0u8; 1];
        let eof = tokio::time::timeout(Duration::from_secs(5), s2.read(&mut buf)).await;
        assert!(
            matches!(eof, Ok(Ok(0)) | Ok(Err(_))),
            "held connection not closed on heal: {eof:?}"
        );
        let mut s3 = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut s3, b"back", Duration::from_secs(5)).await.unwrap(),
            b"back"
        );
    }

    #[tokio::test]
    async fn delays_in_order() {
        let p = LinkProxy::start(echo_server().await, 2).await.unwrap();
        p.set(LinkFaults {
            delay_ms: 100,
            jitter_ms: 50,
            ..Default::default()
        });
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        let started = std::time::Instant::now();
        for i in 0..5u8 {
            let msg = [i; 3];
            assert_eq!(roundtrip(&mut s, &msg, Duration::from_secs(10)).await.unwrap(), msg);
        }
        // Delay is applied both ways: at least 5 × 2 × 100 ms. Only a lower
        // bound is asserted: a loaded machine makes it slower, never faster.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1000),
            "5 delayed round trips took only {took:?}"
        );
    }

    #[tokio::test]
    async fn drops_kill_connections() {
        let p = LinkProxy::start(echo_server().await, 3).await.unwrap();
        p.set(LinkFaults {
            drop_per_mille: 1000,
            ..Default::default()
        });
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        let got = roundtrip(&mut s, b"x", Duration::from_secs(5)).await;
        assert!(got.is_err(), "a link dropping everything echoed: {got:?}");
        tracing::info!("an upstream that is down closes the connection");
        let dead = LinkProxy::start("127.0.0.1:1".into(), 4).await.unwrap();
        let mut s = TcpStream::connect(dead.addr()).await.unwrap();
        let got = roundtrip(&mut s, b"x", Duration::from_secs(5)).await;
        assert!(got.is_err(), "a proxy to nowhere echoed: {got:?}");
    }
}
