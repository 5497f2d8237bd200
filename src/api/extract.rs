//! Extractors whose rejections are our JSON error body, naming the field.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::state::BodyLimit;
use super::state::MAX_BODY_BYTES;
use crate::error::Error;

/// The field a serde error is about: its path, or the missing/unknown field
/// a message names when the path is the top level.
fn error_field(path: &serde_path_to_error::Path, message: &str, top: &str) -> String {
    let path = path.to_string();
    let named = ["missing field `", "unknown field `"].iter().find_map(|prefix| {
        let rest = message.split(prefix).nth(1)?;
        rest.split('`').next().map(str::to_string)
    });
    match (path.as_str(), named) {
        (".", Some(name)) => name,
        (".", None) => top.to_string(),
        (p, Some(name)) if message.starts_with("missing field") => format!("{p}.{name}"),
        (p, _) => p.to_string(),
    }
}

/// JSON body extractor: 400 naming the offending field (`body` for syntax
/// errors), 413 over the body limit (`log.max_entry_bytes`).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        if !json_type {
            return Err(Error::bad("content-type", "expected application/json"));
        }
        let limit_bytes = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(MAX_BODY_BYTES, |limit| limit.0);
        let bytes = match bytes::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(Error::BodyTooLarge { limit_bytes }),
            Err(r) => return Err(Error::bad("body", r.body_text())),
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let msg = e.inner().to_string();
            let field = match e.inner().classify() {
                serde_json::error::Category::Data => error_field(e.path(), &msg, "body"),
                _ => "body".to_string(),
            };
            Error::bad(field, msg)
        })?;
        de.end().map_err(|e| Error::bad("body", e.to_string()))?;
        Ok(JsonBody(value))
    }
}

/// Query-string extractor: 400 naming the offending parameter.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let msg = e.inner().to_string();
            Error::bad(error_field(e.path(), &msg, "query"), msg)
        })
    }
}
