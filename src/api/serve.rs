//! The admin API's accept loop: `axum::serve` with two limits it lacks.
//!
//! - **Header read timeout** (`api.header_read_timeout_ms`): a connection
//!   must send a complete request head within this time of the server
//!   starting to wait for one (a new connection, or an idle keep-alive one),
//!   or it is closed. A slowloris client that sends a partial header and
//!   stalls, or connects and sends nothing, holds a connection for at most
//!   this long. A response that streams (SSE) is not affected: the timer
//!   runs only while the server waits for a request head.
//! - **Connection limit** (`api.max_connections`): connections served at
//!   once; one more is accepted and closed at once (and counted), so a
//!   flood costs the node a file descriptor for a moment, not memory.
//!
//! Every request also carries the client's address ([`ClientAddr`]), which
//! the stream limits key on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use tower::ServiceExt;

/// The address of the client a request came from (a request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The HTTP server's limits (from `[api]`; see [`super::ApiSettings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a connection has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serve `app` on `listener` until the task is aborted, with `limits`.
pub async fn serve<L>(mut listener: L, app: Router, limits: HttpLimits)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refused = 0u64;
    loop {
        let (io, peer) = listener.accept().await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Closed at once: the client sees a reset, not a hang. Logged
            // at 1, 2, 4, 8… refusals so a flood does not flood the log.
            refused += 1;
            let n = refused;
            if n.is_power_of_two() {
                tracing::warn!(peer = %peer, refused = n, limit = limits.max_connections,
                    "admin api at its connection limit; closed a new connection");
            }
            drop(io);
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.oneshot(req.map(Body::new)).await.unwrap_or_else(|e| match e {})) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer, error = %e, "admin api connection ended with an error");
            }
        });
    }
}
