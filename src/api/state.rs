//! The state every handler shares ([`Api`]), the settings it is built
//! from, and the small helpers of every handler.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use cairn_raft::RaftNode;
use cairn_state::Mission;
use serde::Deserialize;
use serde::Serialize;

use super::serve::HttpLimits;
use super::streams;
use super::streams::StreamLimits;
use crate::error::Error;

/// Largest request body accepted by default: the default
/// `log.max_entry_bytes`. The router takes the node's own
/// [`RaftNode::max_entry_bytes`], so a body the API parses can become a log
/// entry (a command encodes smaller than its JSON but for long arrays of
/// short floats, which the state machine bounds).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The body limit in force, for [`JsonBody`]'s error (a request extension
/// the router adds).
#[derive(Clone, Copy)]
pub(super) struct BodyLimit(pub(super) usize);

/// Header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Header carrying the applied index a read reflected.
pub const APPLIED_INDEX_HEADER: &str = "x-cairn-applied-index";

/// Admin API security settings and limits (`[api]` in the node config).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer token required on mutating requests. None (and no
    /// `token_file`) means no authentication: for a bench only.
    pub token: Option<String>,
    /// Read the token from this file instead (surrounding whitespace is
    /// trimmed), so it need not sit in the config.
    pub token_file: Option<PathBuf>,
    /// Require the token on reads too (status, tasks, metrics, watch…).
    pub read_requires_token: bool,
    /// Serve HTTPS with the node's `[tls]` certificate.
    pub tls: bool,
    /// Extra origins (`http://host:port`) whose pages may call this API
    /// from a browser, besides the members' own API addresses: for when
    /// operators reach the nodes by a name the members list does not use.
    pub cors_allowed_origins: Vec<String>,
    /// Time a connection has to send a complete request head, ms (default
    /// 10 000): a slowloris client holds a connection at most this long.
    pub header_read_timeout_ms: u64,
    /// Connections the API serves at once (default 256); more are closed
    /// at once.
    pub max_connections: usize,
    /// Streams of each kind (`/v1/watch`, `/v1/telemetry`) one node serves
    /// at once (default 64).
    pub max_streams: usize,
    /// Of `max_streams`, how many only clients with the API token may take
    /// (default 16; none when the node has no token).
    pub stream_slots_reserved_for_token: usize,
    /// Streams of each kind one client address may hold without the token
    /// (default 8).
    pub max_streams_per_client: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            token: None,
            token_file: None,
            read_requires_token: false,
            tls: false,
            cors_allowed_origins: Vec::new(),
            // 10 s: a request head is a few hundred bytes; a client on the
            // rover's Wi-Fi sends it in milliseconds.
            header_read_timeout_ms: 10_000,
            // 256: a few operators' pages (two streams and a poll each), the
            // CLI and agents, with room; each costs a task and buffers.
            max_connections: 256,
            max_streams: streams::DEFAULT_LIMITS.max,
            stream_slots_reserved_for_token: streams::DEFAULT_LIMITS.reserved_for_token,
            max_streams_per_client: streams::DEFAULT_LIMITS.per_client,
        }
    }
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("read_requires_token", &self.read_requires_token)
            .field("tls", &self.tls)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("max_streams", &self.max_streams)
            .field("stream_slots_reserved_for_token", &self.stream_slots_reserved_for_token)
            .field("max_streams_per_client", &self.max_streams_per_client)
            .finish()
    }
}

impl ApiSettings {
    /// The configured token, from `token` or `token_file` (trimmed; both
    /// set is an error).
    pub fn resolve_token(&self) -> Result<Option<String>, Error> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(Error::Config {
                reason: "api.token and api.token_file are both set; use one".into(),
            }),
            (Some(t), None) => Ok(Some(t.trim().to_string())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| Error::Config {
                    reason: format!("api.token_file {}: {e}", path.display()),
                }),
            (None, None) => Ok(None),
        }
    }

    /// The HTTP server's limits, checked.
    pub fn http_limits(&self) -> Result<HttpLimits, Error> {
        if self.header_read_timeout_ms == 0 || self.max_connections == 0 {
            return Err(Error::Config {
                reason: "api.header_read_timeout_ms and api.max_connections must be at least 1".into(),
            });
        }
        Ok(HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
            max_connections: self.max_connections,
        })
    }

    /// The stream limits, checked.
    pub fn stream_limits(&self) -> Result<StreamLimits, Error> {
        if self.max_streams == 0 || self.max_streams_per_client == 0 {
            return Err(Error::Config {
                reason: "api.max_streams and api.max_streams_per_client must be at least 1".into(),
            });
        }
        if self.stream_slots_reserved_for_token >= self.max_streams {
            return Err(Error::Config {
                reason: format!(
                    "api.stream_slots_reserved_for_token ({}) must be less than api.max_streams ({})",
                    self.stream_slots_reserved_for_token, self.max_streams
                ),
            });
        }
        Ok(StreamLimits {
            max: self.max_streams,
            reserved_for_token: self.stream_slots_reserved_for_token,
            per_client: self.max_streams_per_client,
        })
    }
}

/// Checked authentication settings.
#[derive(Clone, Default)]
pub struct ApiAuth {
    pub(super) token: Option<Arc<[u8]>>,
    pub(super) read_requires_token: bool,
}

impl ApiAuth {
    /// No authentication at all.
    pub fn open() -> Self {
        Self::default()
    }

    /// Resolve the settings (reads `token_file`).
    pub fn from_settings(s: &ApiSettings) -> Result<Self, Error> {
        let token = s.resolve_token()?;
        if token.as_deref() == Some("") {
            return Err(Error::Config {
                reason: "api token is empty".into(),
            });
        }
        if s.read_requires_token && token.is_none() {
            return Err(Error::Config {
                reason: "api.read_requires_token needs api.token or api.token_file".into(),
            });
        }
        Ok(Self {
            token: token.map(|t| Arc::from(t.into_bytes())),
            read_requires_token: s.read_requires_token,
        })
    }

    /// Whether a token is required for anything.
    pub fn is_enabled(&self) -> bool {
        self.token.is_some()
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct Api {
    pub(super) node: Arc<RaftNode<Mission>>,
    pub(super) auth: ApiAuth,
    pub(super) started_ms: u64,
    pub(super) next_request: Arc<AtomicU64>,
    pub(super) watch_slots: streams::StreamSlots,
    pub(super) telemetry_slots: streams::StreamSlots,
    pub(super) telemetry: crate::telemetry::Telemetry,
    pub(super) cors_origins: Arc<[String]>,
    pub(super) http_metrics: Arc<super::metrics::HttpMetrics>,
}

impl Api {
    /// The API over `node` with `auth`, and a telemetry hub of its own
    /// (local only: the daemon passes its forwarding hub with
    /// [`Api::with_telemetry`]).
    pub fn new(node: Arc<RaftNode<Mission>>, auth: ApiAuth) -> Self {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let telemetry = crate::telemetry::Telemetry::with_defaults(node.id());
        let defaults = streams::DEFAULT_LIMITS;
        let enabled = auth.is_enabled();
        Self {
            node,
            auth,
            started_ms,
            next_request: Arc::new(AtomicU64::new(1)),
            watch_slots: streams::StreamSlots::new("watch", defaults, enabled),
            telemetry_slots: streams::StreamSlots::new("telemetry", defaults, enabled),
            telemetry,
            cors_origins: Arc::from(Vec::new()),
            http_metrics: Arc::new(super::metrics::HttpMetrics::new()),
        }
    }

    /// Also answer cross-origin requests from these origins (checked with
    /// [`check_cors_origins`]), besides the members' API addresses.
    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_origins = Arc::from(origins);
        self
    }

    /// Bound the watch and telemetry streams by `limits` (default: from
    /// [`ApiSettings::default`]).
    pub fn with_stream_limits(mut self, limits: StreamLimits) -> Self {
        let enabled = self.auth.is_enabled();
        self.watch_slots = streams::StreamSlots::new("watch", limits, enabled);
        self.telemetry_slots = streams::StreamSlots::new("telemetry", limits, enabled);
        self
    }

    /// Serve `telemetry` at `/v1/telemetry`.
    pub fn with_telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    pub(super) fn new_request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("n{}-{:x}-{n}", self.node.id(), self.started_ms)
    }
}

/// Parse a numeric path segment, naming it on error.
pub(super) fn path_id(raw: &str, field: &str) -> Result<u64, Error> {
    raw.parse()
        .map_err(|_| Error::bad(field, format!("{raw:?} is not a non-negative integer")))
}

/// A JSON response with the applied index it reflects.
pub(super) fn indexed<T: Serialize>(index: u64, body: T) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(APPLIED_INDEX_HEADER, HeaderValue::from(index));
    resp
}
