//! `cairn param declare|set|get|list`.

use anyhow::Context;
use cairn::api::parse_param_value;
use cairn::api::DeclareParamRequest;
use cairn::api::SetParamRequest;
use cairn::client::Client;
use cairn::client::ClientError;
use cairn::state::Param;
use cairn::state::ParamKind;
use cairn::state::ParamValue;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::out::print_json;
use super::out::print_write;
use super::out::stale_q;
use super::NONE;

#[derive(Subcommand)]
pub enum ParamCmd {
    /// Declare a parameter: KIND is bool | int:MIN:MAX | float:MIN:MAX | string | enum:A|B|C.
    Declare {
        /// Name.
        name: String,
        /// Kind and bounds.
        kind: String,
        /// Initial value.
        value: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Set a parameter.
    Set {
        /// Name.
        name: String,
        /// Value (parsed by the declared type).
        value: String,
    },
    /// Show a parameter.
    Get {
        /// Name.
        name: String,
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// List parameters.
    List {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
}

fn parse_kind(kind: &str) -> anyhow::Result<ParamKind> {
    let parts: Vec<&str> = kind.split(':').collect();
    let num = |s: &str| -> anyhow::Result<f64> { s.parse().with_context(|| format!("bound {s:?} is not a number")) };
    Ok(match parts.as_slice() {
        ["bool"] => ParamKind::Bool,
        ["int", min, max] => ParamKind::Int {
            min: min
                .parse()
                .with_context(|| format!("bound {min:?} is not an integer"))?,
            max: max
                .parse()
                .with_context(|| format!("bound {max:?} is not an integer"))?,
        },
        ["float", min, max] => ParamKind::Float {
            min: num(min)?,
            max: num(max)?,
        },
        ["string"] => ParamKind::String { max_len: 256 },
        ["enum", choices] => ParamKind::Enum {
            choices: choices.split('|').map(str::to_string).collect(),
        },
        _ => anyhow::bail!("kind {kind:?}: expected bool | int:MIN:MAX | float:MIN:MAX | string | enum:A|B"),
    })
}

/// `cairn param declare`'s VALUE as a value of `kind`, parsed as the node
/// parses `cairn param set`'s.
fn parse_value(kind: &ParamKind, raw: &str) -> anyhow::Result<ParamValue> {
    parse_param_value(kind, raw).map_err(anyhow::Error::msg)
}

/// A parameter value as a person writes it: `1.5`, `true`, `"text"` (as
/// its JSON reads).
fn show_value(v: &ParamValue) -> String {
    match v {
        ParamValue::Bool(b) => b.to_string(),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Float(f) => serde_json::to_string(f).unwrap_or_default(),
        ParamValue::String(s) | ParamValue::Enum(s) => serde_json::to_string(s).unwrap_or_default(),
    }
}

/// `cairn param set`: one `PUT` with the value as text, which the node
/// parses by the declared kind. A node of an older release knows only the
/// typed value: then the kind is read first, as the CLI used to.
async fn set(client: &Client, name: &str, raw: String) -> anyhow::Result<Option<Value>> {
    let path = format!("/v1/params/{name}");
    let body = SetParamRequest {
        value: None,
        text: Some(raw.clone()),
    };
    match client.call(Method::PUT, &path, Some(&body)).await {
        Ok(r) => Ok(r),
        Err(ClientError::Api { status: 400, body, .. }) if body.field.as_deref() == Some("text") => {
            if body.message.contains("unknown field `text`") {
                let current: Option<Param> = client.call(Method::GET, &path, NONE).await?;
                let kind = current.context("the node returned no parameter")?.kind;
                let body = SetParamRequest {
                    value: Some(parse_value(&kind, &raw)?),
                    text: None,
                };
                return Ok(client.call(Method::PUT, &path, Some(&body)).await?);
            }
            // The text is not of the declared kind: a slip on this side
            // (exit 1), as when the CLI parsed it itself.
            let why = body.message.strip_prefix("invalid text: ").unwrap_or(&body.message);
            anyhow::bail!("{why}")
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `cmd`.
pub async fn run(client: &Client, json: bool, cmd: ParamCmd) -> anyhow::Result<()> {
    match cmd {
        ParamCmd::Declare {
            name,
            kind,
            value,
            description,
        } => {
            let kind = parse_kind(&kind)?;
            let value = parse_value(&kind, &value)?;
            let body = DeclareParamRequest {
                name: name.clone(),
                description,
                kind,
                value,
            };
            let r: Option<serde_json::Value> = client.call(Method::POST, "/v1/params", Some(&body)).await?;
            print_write(json, &name, r)?;
        }
        ParamCmd::Set { name, value } => {
            let r = set(client, &name, value).await?;
            print_write(json, &name, r)?;
        }
        ParamCmd::Get { name, stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/params/{name}{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if json {
                return print_json(&r);
            }
            let p: Param =
                serde_json::from_value(r).context("the node answered with something else than a parameter")?;
            println!("{name} = {}", show_value(&p.value));
        }
        ParamCmd::List { stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/params{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if json {
                return print_json(&r);
            }
            let params: Vec<Param> =
                serde_json::from_value(r).context("the node answered with something else than parameters")?;
            for p in params {
                println!("{:<28} {}", p.name, show_value(&p.value));
            }
        }
    }
    Ok(())
}
