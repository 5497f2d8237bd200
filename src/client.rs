//! A small HTTP client of the admin API with endpoint fail-over, used by the
//! CLI (and handy for programs that drive cairn from outside).
//!
//! Endpoints are tried in order; one that is down, or answers 503 ("no
//! leader here, retry elsewhere"), is skipped. A bearer token, when given,
//! goes with every request; with a CA certificate the client speaks HTTPS
//! and trusts only that CA.
//!
//! Two timeouts, like etcdctl's `--dial-timeout` and `--command-timeout`:
//! before its first request an endpoint must answer `GET /version` as a
//! cairn node within the dial timeout (a frozen process, whose kernel still
//! accepts the TCP connection, or some other HTTP server is skipped after
//! that, not after the command timeout); each request then has the
//! command timeout.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use cairn_raft::RetryClass;

use crate::wire::ErrorBody;

mod error;
mod watch;

use error::api_error;
use error::content_type;
use error::not_cairn;
pub use error::root_cause;
pub use error::ClientError;
pub use error::Unanswered;
pub use watch::parse_sse;
pub use watch::SseEvent;

/// Idle pooled connections are dropped after this: well under the node's
/// `api.header_read_timeout_ms` (10 s by default), after which the server
/// closes an idle connection, so a request never goes out on a connection
/// the server is closing.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// The dial timeout unless told otherwise (etcdctl's default too), capped
/// by the request timeout.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A client's two timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Connecting to an endpoint and its first answer (`GET /version`).
    pub dial: Duration,
    /// One request, once the endpoint answered.
    pub command: Duration,
}

impl Timeouts {
    /// `command` per request, and the default dial timeout (at most `command`).
    pub fn with_command(command: Duration) -> Self {
        Self {
            dial: DEFAULT_DIAL_TIMEOUT.min(command),
            command,
        }
    }
}

/// Optional client settings.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Bearer token for the admin API.
    pub token: Option<String>,
    /// CA certificate (PEM) to trust; implies HTTPS for endpoints given
    /// without a scheme.
    pub ca_cert: Option<PathBuf>,
}

/// Admin API client over a list of endpoints.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<String>,
    http: reqwest::Client,
    stream_http: reqwest::Client,
    token: Option<String>,
    /// Client tag for at-most-once writes: a random id per client, and a
    /// sequence that grows with every write (see docs/API.md).
    client_id: u64,
    next_seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
    timeouts: Timeouts,
    /// Endpoints that answered as a cairn node (shared by clones).
    dialled: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

fn normalise(e: &str, https: bool) -> String {
    let e = e.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else if https {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    }
}

impl Client {
    /// A plain-HTTP client without a token trying `endpoints` in order
    /// (`host:port` or URLs).
    /// (`host:port` or URLs), `timeout` per request (and the default dial
    /// timeout, at most `timeout`).
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Self {
        let timeouts = Timeouts::with_command(timeout);
        let endpoints = endpoints.iter().map(|e| normalise(e, false)).collect();
        let http = reqwest::Client::builder()
            .timeout(timeouts.command)
            .connect_timeout(timeouts.dial)
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let stream_http = reqwest::Client::builder()
            .connect_timeout(timeouts.dial)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            endpoints,
            http,
            stream_http,
            token: None,
            client_id: rand::random(),
            next_seq: Default::default(),
            timeouts,
            dialled: Default::default(),
        }
    }

    /// A client with a token and/or a CA to trust; `timeout` per request
    /// (and the default dial timeout, at most `timeout`).
    pub fn with_options(endpoints: Vec<String>, timeout: Duration, opts: ClientOptions) -> Result<Self, ClientError> {
        Self::with_timeouts(endpoints, Timeouts::with_command(timeout), opts)
    }

    /// A client with both timeouts given.
    pub fn with_timeouts(endpoints: Vec<String>, timeouts: Timeouts, opts: ClientOptions) -> Result<Self, ClientError> {
        let https = opts.ca_cert.is_some();
        let endpoints = endpoints.iter().map(|e| normalise(e, https)).collect();
        let setup = |e: reqwest::Error| ClientError::Setup { reason: e.to_string() };
        let mut b = reqwest::Client::builder()
            .timeout(timeouts.command)
            .connect_timeout(timeouts.dial)
            .pool_idle_timeout(POOL_IDLE);
        let mut sb = reqwest::Client::builder().connect_timeout(timeouts.dial);
        if let Some(ca) = &opts.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| ClientError::Setup {
                reason: format!("cannot read ca certificate {}: {e}", ca.display()),
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ClientError::Setup {
                reason: format!("{} is not a pem certificate: {e}", ca.display()),
            })?;
            b = b.add_root_certificate(cert.clone()).tls_built_in_root_certs(false);
            sb = sb.add_root_certificate(cert).tls_built_in_root_certs(false);
        }
        Ok(Self {
            endpoints,
            http: b.build().map_err(setup)?,
            stream_http: sb.build().map_err(setup)?,
            token: opts.token.filter(|t| !t.is_empty()),
            client_id: rand::random(),
            next_seq: Default::default(),
            timeouts,
            dialled: Default::default(),
        })
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The dial and command timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Checks, once per endpoint, that it is a cairn node that answers:
    /// `GET /version` within the dial timeout. A frozen process (SIGSTOP:
    /// its kernel still completes the TCP handshake) or another HTTP
    /// server is then skipped after the dial timeout instead of holding
    /// every request for the command timeout. No token goes with it.
    async fn dial(&self, endpoint: &str) -> Result<(), ClientError> {
        if self.dialled.lock().is_ok_and(|d| d.contains(endpoint)) {
            return Ok(());
        }
        let down = |reason: String| ClientError::Unreachable {
            tried: format!("{endpoint}: {reason}"),
            why: Unanswered::Down,
        };
        let dial_ms = self.timeouts.dial.as_millis();
        let resp = self
            .http
            .get(format!("{endpoint}/version"))
            .timeout(self.timeouts.dial)
            .send()
            .await
            .map_err(|e| {
                down(if e.is_timeout() {
                    format!("no answer within the dial timeout ({dial_ms} ms; frozen or overloaded?)")
                } else {
                    format!("cannot connect ({})", root_cause(&e))
                })
            })?;
        let status = resp.status();
        let content_type = content_type(&resp);
        let text = resp.text().await.map_err(|e| {
            down(if e.is_timeout() {
                format!("no answer within the dial timeout ({dial_ms} ms; frozen or overloaded?)")
            } else {
                format!("the answer broke off ({})", root_cause(&e))
            })
        })?;
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let cairn = match &json {
            // This build's and newer: the build info.
            Some(v) if status.is_success() => v.get("version").is_some(),
            // An older node without /version: a cairn error body.
            Some(v) => serde_json::from_value::<ErrorBody>(v.clone()).is_ok(),
            None => status == reqwest::StatusCode::NOT_FOUND && text.is_empty(),
        };
        if !cairn {
            return Err(down(not_cairn(status, &content_type)));
        }
        if let Ok(mut d) = self.dialled.lock() {
            d.insert(endpoint.to_string());
        }
        Ok(())
    }

    /// A failed send as [`ClientError::Unreachable`] for `endpoint`.
    fn send_error(&self, endpoint: &str, e: &reqwest::Error) -> ClientError {
        let (reason, why) = if e.is_connect() {
            (format!("cannot connect ({})", root_cause(e)), Unanswered::Down)
        } else if e.is_timeout() {
            (
                format!(
                    "no answer within the command timeout ({} ms)",
                    self.timeouts.command.as_millis()
                ),
                Unanswered::Unknown,
            )
        } else {
            (
                format!("the connection broke before an answer ({})", root_cause(e)),
                Unanswered::Unknown,
            )
        };
        ClientError::Unreachable {
            tried: format!("{endpoint}: {reason}"),
            why,
        }
    }

    fn request(&self, http: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let req = http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Call one endpoint only.
    pub async fn call_one<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, ClientError> {
        self.call_one_tagged(endpoint, method, path, body, None).await
    }

    async fn call_one_tagged<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        tag: Option<(u64, u64)>,
    ) -> Result<Option<T>, ClientError> {
        self.dial(endpoint).await?;
        let mut req = self.request(&self.http, method, format!("{endpoint}{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some((client_id, seq)) = tag {
            req = req
                .header(crate::wire::CLIENT_ID_HEADER, client_id)
                .header(crate::wire::CLIENT_SEQ_HEADER, seq);
        }
        let resp = req.send().await.map_err(|e| self.send_error(endpoint, &e))?;
        let status = resp.status();
        let content_type = content_type(&resp);
        let text = resp.text().await.map_err(|e| self.send_error(endpoint, &e))?;
        if !status.is_success() {
            return Err(api_error(endpoint, status, &content_type, text));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ClientError::Protocol {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })
    }

    /// Call the first endpoint that answers; an endpoint that is down or
    /// says "retry elsewhere" (503) is skipped. Writes carry a client tag,
    /// so one answered "outcome unknown" (504) is retried on the next
    /// endpoint with the same tag: it applies at most once.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, ClientError> {
        let is_write = !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
        let tag = is_write.then(|| {
            let seq = self.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            (self.client_id, seq)
        });
        let mut tried = Vec::new();
        let mut why = Unanswered::Down;
        // The first endpoint that was reached but could not serve.
        let mut reached = None;
        // The one retry policy's rule (cairn_raft::retry): after an unknown
        // outcome only a tagged write, or a read, goes to the next endpoint.
        // One attempt per endpoint bounds the loop.
        let idempotent = tag.is_some() || !is_write;
        for ep in &self.endpoints {
            let (class, w, message) = match self.call_one_tagged(ep, method.clone(), path, body, tag).await {
                Err(ClientError::Unreachable { tried: t, why: w }) => {
                    let class = match w {
                        Unanswered::Unknown => RetryClass::Unknown,
                        Unanswered::Down | Unanswered::Unavailable => RetryClass::Safe,
                    };
                    (class, w, t)
                }
                Err(ClientError::Api { status: 503, body, .. }) => (
                    RetryClass::Safe,
                    Unanswered::Unavailable,
                    format!("{ep}: {}", body.message),
                ),
                // An untagged request's 504 is an answer (e.g. a state hash
                // not reached in time): given back as it is.
                Err(ClientError::Api { status: 504, body, .. }) if tag.is_some() => (
                    RetryClass::Unknown,
                    Unanswered::Unknown,
                    format!("{ep}: {}", body.message),
                ),
                other => return other,
            };
            if !class.may_retry(idempotent) {
                return Err(ClientError::Unreachable { tried: message, why: w });
            }
            tried.push(message);
            why = why.max(w);
            if w != Unanswered::Down {
                reached.get_or_insert(ep);
            }
        }
        if let Some(ep) = reached {
            if self.uninitialised(ep).await {
                tried.push(format!(
                    "{ep} is part of no cluster yet: bootstrap one with `cairn cluster init`"
                ));
            }
        }
        Err(ClientError::Unreachable {
            tried: tried.join("; "),
            why,
        })
    }

    /// Whether `endpoint` says it is part of no cluster (no members): the
    /// reason for its 503s before `cluster init`.
    async fn uninitialised(&self, endpoint: &str) -> bool {
        matches!(
            self.call_one::<(), cairn_raft::Status>(endpoint, reqwest::Method::GET, "/v1/status", None)
                .await,
            Ok(Some(s)) if s.members.is_empty()
        )
    }

    /// This client with the leader's API endpoint tried first: asks the
    /// endpoints for `/v1/status` in turn and, from the first that knows a
    /// leader, puts that leader's API address (from the member list) ahead
    /// of the configured endpoints, and the other members' after them. For
    /// requests only the leader serves (membership changes): the others
    /// answer 503, which [`Client::call`] skips. Unchanged if no endpoint
    /// answers or none knows a leader.
    pub async fn leader_first(&self) -> Self {
        let mut known: Option<(String, cairn_raft::Status)> = None;
        for ep in &self.endpoints {
            if let Ok(Some(s)) = self
                .call_one::<(), cairn_raft::Status>(ep, reqwest::Method::GET, "/v1/status", None)
                .await
            {
                let has_leader = s.leader.is_some();
                known = Some((ep.clone(), s));
                if has_leader {
                    break;
                }
            }
        }
        let Some((ep, status)) = known else {
            return self.clone();
        };
        let https = ep.starts_with("https://");
        let url = |addr: &str| normalise(addr, https);
        let mut endpoints: Vec<String> = Vec::new();
        let leader = status
            .leader
            .and_then(|l| status.members.iter().find(|m| m.id == l))
            .map(|m| url(&m.member.api_addr));
        let members = status.members.iter().map(|m| url(&m.member.api_addr));
        for e in leader.into_iter().chain(self.endpoints.iter().cloned()).chain(members) {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        Self {
            endpoints,
            ..self.clone()
        }
    }

    /// `GET path` as raw bytes (e.g. `/v1/backup`) from the first endpoint
    /// that answers; one that is down or answers 503 is skipped.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut tried = Vec::new();
        let mut why = Unanswered::Down;
        for ep in &self.endpoints {
            let sent = match self.dial(ep).await {
                Ok(()) => self
                    .request(&self.http, reqwest::Method::GET, format!("{ep}{path}"))
                    .send()
                    .await
                    .map_err(|e| self.send_error(ep, &e)),
                Err(e) => Err(e),
            };
            let resp = match sent {
                Ok(r) => r,
                Err(ClientError::Unreachable { tried: t, why: w }) => {
                    tried.push(t);
                    why = why.max(w);
                    continue;
                }
                Err(other) => return Err(other),
            };
            let status = resp.status();
            let content_type = content_type(&resp);
            if status.is_success() {
                return resp
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| self.send_error(ep, &e));
            }
            let text = resp.text().await.map_err(|e| self.send_error(ep, &e))?;
            match api_error(ep, status, &content_type, text) {
                ClientError::Api { status: 503, body, .. } => {
                    tried.push(format!("{ep}: {}", body.message));
                    why = why.max(Unanswered::Unavailable);
                }
                ClientError::Protocol { reason, .. } => tried.push(format!("{ep}: {reason}")),
                other => return Err(other),
            }
        }
        Err(ClientError::Unreachable {
            tried: tried.join("; "),
            why,
        })
    }
}
