//! A small HTTP client of the admin API with endpoint fail-over, used by the
//! CLI (and handy for programs that drive cairn from outside).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ErrorBody;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint answered.
    #[error("no endpoint reachable ({tried}); is a node running? try --endpoints")]
    Unreachable {
        /// What was tried, with each failure.
        tried: String,
    },
    /// The node answered with an error.
    #[error("{endpoint}: {} ({})", body.message, body.code)]
    Api {
        /// Which node said it.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// The response did not parse.
    #[error("{endpoint}: unexpected response: {reason}")]
    Protocol {
        /// Which node.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// Admin API client over a list of endpoints.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client trying `endpoints` in order (`host:port` or URLs).
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Self {
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                if e.starts_with("http://") || e.starts_with("https://") {
                    e.trim_end_matches('/').to_string()
                } else {
                    format!("http://{}", e.trim_end_matches('/'))
                }
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { endpoints, http }
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Call one endpoint only.
    pub async fn call_one<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, ClientError> {
        let mut req = self.http.request(method, format!("{endpoint}{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            tried: format!("{endpoint}: {e}"),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Protocol {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or(ErrorBody {
                code: status.as_str().to_string(),
                message: text,
                field: None,
                retryable: status.is_server_error(),
            });
            return Err(ClientError::Api {
                endpoint: endpoint.to_string(),
                status: status.as_u16(),
                body,
            });
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
    /// says "retry elsewhere" (503) is skipped.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, ClientError> {
        let mut tried = Vec::new();
        for ep in &self.endpoints {
            match self.call_one(ep, method.clone(), path, body).await {
                Err(ClientError::Unreachable { tried: t }) => tried.push(t),
                Err(ClientError::Api { status: 503, body, .. }) => tried.push(format!("{ep}: {}", body.message)),
                other => return other,
            }
        }
        Err(ClientError::Unreachable {
            tried: tried.join("; "),
        })
    }
}
