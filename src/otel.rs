//! Exporting the `tracing` spans to an OpenTelemetry collector.
//!
//! The `[tracing]` settings are always read, so one config file serves
//! every build. The exporter itself (OTLP over HTTP with protobuf bodies,
//! e.g. to Jaeger or Grafana Tempo on port 4318) is compiled only with the
//! `otel` feature, which is off by default: a binary built without it that
//! is given an endpoint says so at startup and runs on without exporting.
//!
//! Which spans: those of the write path — `api` (request id), `forwarded`
//! on the leader, `raft.client_write`, `raft.append`, `raft.apply` — with
//! the separate filter `otlp_filter`, so exporting the raft spans (debug
//! level) does not print them on stderr, which `RUST_LOG` still filters.

use serde::Deserialize;
use serde::Serialize;

/// The `[tracing]` section: where to export spans, and which.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (`/v1/traces` is
    /// appended unless the URL already ends with it). Empty: the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL), else no export.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// Which spans are exported, in `RUST_LOG` syntax. Default: `info`,
    /// the raft spans of the write path (debug level), openraft's own only
    /// from `warn`.
    #[serde(default = "default_otlp_filter")]
    pub otlp_filter: String,
    /// Log lines on stderr: `plain` (default) or `json`, one object per
    /// line. `CAIRN_LOG_FORMAT` and `--log-format` override it.
    #[serde(default)]
    pub log_format: crate::logging::LogFormat,
}

fn default_otlp_filter() -> String {
    "info,openraft=warn,cairn_raft::consensus=debug".into()
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            otlp_filter: default_otlp_filter(),
            log_format: crate::logging::LogFormat::default(),
        }
    }
}

/// The traces URL of the OTLP endpoint that `traces_url` resolves from
/// the config and the environment.
const TRACES_PATH: &str = "/v1/traces";

impl TracingSettings {
    /// Where spans go: the configured endpoint, else the standard
    /// environment variables; `None` = no export.
    pub fn traces_url(&self) -> Option<String> {
        traces_url_from(
            &self.otlp_endpoint,
            std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok(),
            std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok(),
        )
    }
}

fn traces_url_from(configured: &str, traces_env: Option<String>, base_env: Option<String>) -> Option<String> {
    let with_path = |base: &str| {
        let base = base.trim().trim_end_matches('/');
        if base.ends_with(TRACES_PATH) {
            base.to_string()
        } else {
            format!("{base}{TRACES_PATH}")
        }
    };
    if !configured.trim().is_empty() {
        return Some(with_path(configured));
    }
    if let Some(url) = traces_env.filter(|u| !u.trim().is_empty()) {
        return Some(url.trim().to_string());
    }
    base_env.filter(|u| !u.trim().is_empty()).map(|u| with_path(&u))
}

/// Ends the export: flushes the spans still batched (at shutdown).
#[cfg(feature = "otel")]
pub struct OtelGuard {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

#[cfg(feature = "otel")]
impl OtelGuard {
    /// Send what is still batched and stop the exporter (blocks up to the
    /// exporter's timeout if the collector does not answer). A failure is
    /// logged: at shutdown there is nothing else to do about it.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing spans to the OTLP collector failed");
        }
    }
}

/// A `tracing` layer that exports spans to the OTLP/HTTP collector at
/// `traces_url` (see [`TracingSettings::traces_url`]), with resource
/// attributes `service.name = cairn` and `cairn.node_id`. Spans are batched
/// and sent from the exporter's own thread; keep the guard and call
/// [`OtelGuard::shutdown`] before exiting, or the last batch is lost.
#[cfg(feature = "otel")]
pub fn layer<S>(
    traces_url: &str,
    node_id: u64,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>,
        OtelGuard,
    ),
    crate::Error,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces_url)
        .build()
        .map_err(|e| crate::Error::Config {
            reason: format!("OTLP exporter for {traces_url}: {e}"),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("cairn")
        .with_attribute(opentelemetry::KeyValue::new("cairn.node_id", node_id as i64))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("cairn");
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        OtelGuard { provider },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_prefers_the_config_then_the_standard_variables() {
        let env = |s: &str| Some(s.to_string());
        assert_eq!(traces_url_from("", None, None), None, "nothing set: no export");
        assert_eq!(
            traces_url_from("http://jaeger:4318/", env("http://x:1/v1/traces"), env("http://y:2")).as_deref(),
            Some("http://jaeger:4318/v1/traces")
        );
        assert_eq!(
            traces_url_from("http://tempo:4318/v1/traces", None, None).as_deref(),
            Some("http://tempo:4318/v1/traces")
        );
        assert_eq!(
            traces_url_from("", env("http://x:1/custom"), env("http://y:2")).as_deref(),
            Some("http://x:1/custom"),
            "the per-signal variable is used as is"
        );
        assert_eq!(
            traces_url_from("", None, env("http://y:2")).as_deref(),
            Some("http://y:2/v1/traces")
        );
        assert_eq!(traces_url_from("  ", env(""), env("")), None);
    }
}
