//! Client settings: flag > env (both via clap) > client config file > default.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

/// The client config file (TOML).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    endpoints: Option<Vec<String>>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
}

/// Where the CLI talks to, and how.
pub struct ClientSettings {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

impl ClientSettings {
    pub fn resolve(
        endpoints: Option<Vec<String>>,
        token: Option<String>,
        ca_cert: Option<PathBuf>,
        file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let default_file = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("cairn").join("client.toml"));
        let file = match file {
            Some(path) => Some(read_client_file(&path)?),
            None => match default_file.filter(|p| p.exists()) {
                Some(path) => Some(read_client_file(&path)?),
                None => None,
            },
        }
        .unwrap_or_default();
        let file_token = match (&file.token, &file.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(p)) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading token_file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let endpoints = endpoints
            .filter(|e| !e.is_empty())
            .or(file.endpoints)
            .unwrap_or_else(|| vec!["127.0.0.1:8001".into()]);
        Ok(Self {
            endpoints,
            token: token.or(file_token),
            ca_cert: ca_cert.or(file.ca_cert),
        })
    }
}

fn read_client_file(path: &Path) -> anyhow::Result<ClientFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading client config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("client config {}", path.display()))
}
