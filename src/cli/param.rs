//! `cairn param declare|set|get|list|describe|dump|load`.

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
    /// Show a parameter's kind, bounds, description, value and version.
    Describe {
        /// Name.
        name: String,
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Print every parameter's value as YAML (`params: {name: value}`), for
    /// `param load`.
    Dump {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Set the parameters in a YAML FILE written by `param dump`. Every entry
    /// is checked first (declared, of its kind, within bounds): a bad file
    /// changes nothing and names the bad entry. The changed ones are then
    /// set one by one (there is no batch write): if the cluster fails
    /// midway, the ones already set stay set, and the error says which.
    Load {
        /// The YAML file.
        file: std::path::PathBuf,
    },
}

/// What `param dump` writes and `param load` reads.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Dump {
    /// Values by name.
    params: std::collections::BTreeMap<String, serde_norway::Value>,
}

/// A value as YAML: a bool, a number or a string.
fn yaml_value(v: &ParamValue) -> serde_norway::Value {
    use serde_norway::Value as Y;
    match v {
        ParamValue::Bool(b) => Y::Bool(*b),
        ParamValue::Int(i) => Y::Number((*i).into()),
        ParamValue::Float(f) => Y::Number((*f).into()),
        ParamValue::String(s) | ParamValue::Enum(s) => Y::String(s.clone()),
    }
}

/// A dumped value as a value of `kind`, if it is one and within bounds.
fn from_yaml(kind: &ParamKind, y: &serde_norway::Value) -> Result<ParamValue, String> {
    use serde_norway::Value as Y;
    let v = match (kind, y) {
        (ParamKind::Bool, Y::Bool(b)) => ParamValue::Bool(*b),
        (ParamKind::Int { .. }, Y::Number(n)) if n.as_i64().is_some() => {
            ParamValue::Int(n.as_i64().unwrap_or_default())
        }
        (ParamKind::Float { .. }, Y::Number(n)) if n.as_f64().is_some() => {
            ParamValue::Float(n.as_f64().unwrap_or_default())
        }
        (ParamKind::String { .. }, Y::String(s)) => ParamValue::String(s.clone()),
        (ParamKind::Enum { .. }, Y::String(s)) => ParamValue::Enum(s.clone()),
        (kind, other) => {
            let shown = serde_norway::to_string(other).unwrap_or_default();
            return Err(format!("{} is not a {}", shown.trim(), kind_text(kind)));
        }
    };
    if !kind.admits(&v) {
        return Err(format!("{} is outside {}", show_value(&v), kind_text(kind)));
    }
    Ok(v)
}

/// A kind as `param declare` takes it: `float:0:2`, `enum:a|b`.
fn kind_text(kind: &ParamKind) -> String {
    match kind {
        ParamKind::Bool => "bool".into(),
        ParamKind::Int { min, max } => format!("int:{min}:{max}"),
        ParamKind::Float { min, max } => format!("float:{}:{}", super::out::float(*min), super::out::float(*max)),
        ParamKind::String { max_len } => format!("string (at most {max_len} bytes)"),
        ParamKind::Enum { choices } => format!("enum:{}", choices.join("|")),
    }
}

/// Every parameter, read from the cluster.
async fn all(client: &Client, stale: bool) -> anyhow::Result<Vec<Param>> {
    let r: Value = client
        .call(Method::GET, &format!("/v1/params{}", stale_q(stale)), NONE)
        .await?
        .unwrap_or_default();
    serde_json::from_value(r).context("the node answered with something else than parameters")
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
pub(crate) fn show_value(v: &ParamValue) -> String {
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
        ParamCmd::Describe { name, stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/params/{name}{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if json {
                return print_json(&r);
            }
            let p: Param =
                serde_json::from_value(r).context("the node answered with something else than a parameter")?;
            super::out::table(
                &["FIELD", "VALUE"],
                &[
                    vec!["name".into(), p.name.clone()],
                    vec!["kind".into(), kind_text(&p.kind)],
                    vec!["description".into(), p.description.clone()],
                    vec!["value".into(), show_value(&p.value)],
                    vec![
                        "version".into(),
                        if p.version == 0 {
                            "0 (built-in, never changed)".into()
                        } else {
                            p.version.to_string()
                        },
                    ],
                    // The state machine keeps no writer per change.
                    vec!["set by".into(), "- (not recorded)".into()],
                ],
            );
        }
        ParamCmd::Dump { stale } => {
            let params = all(client, stale).await?;
            let dump = Dump {
                params: params.iter().map(|p| (p.name.clone(), yaml_value(&p.value))).collect(),
            };
            if json {
                return print_json(&dump);
            }
            print!("{}", serde_norway::to_string(&dump)?);
        }
        ParamCmd::Load { file } => load(client, json, &file).await?,
    }
    Ok(())
}

/// `cairn param load FILE`: check every entry, then set the changed ones.
async fn load(client: &Client, json: bool, file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let dump: Dump = serde_norway::from_str(&text).with_context(|| {
        format!(
            "{} is not a parameter dump (`params:` with name: value)",
            file.display()
        )
    })?;
    let current: std::collections::BTreeMap<String, Param> = all(client, false)
        .await?
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    // Check all before setting any: a bad file changes nothing.
    let mut changes = Vec::new();
    for (name, y) in &dump.params {
        let Some(p) = current.get(name) else {
            anyhow::bail!(
                "{}: entry {name:?}: no such parameter (declare it first with `cairn param declare`); nothing was set",
                file.display()
            );
        };
        let v = from_yaml(&p.kind, y)
            .map_err(|why| anyhow::anyhow!("{}: entry {name:?}: {why}; nothing was set", file.display()))?;
        if v != p.value {
            changes.push((name.clone(), show_value(&p.value), v));
        }
    }
    let mut done = Vec::new();
    for (name, old, v) in &changes {
        let path = format!("/v1/params/{name}");
        let body = SetParamRequest {
            value: Some(v.clone()),
            text: None,
        };
        let r: Result<Option<Value>, _> = client.call(Method::PUT, &path, Some(&body)).await;
        if let Err(e) = r {
            let set = if done.is_empty() {
                "none".to_string()
            } else {
                done.iter()
                    .map(|(n, _, _): &(String, String, String)| n.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(anyhow::Error::new(e).context(format!(
                "setting {name} failed; set before it: {set}; not set: the rest of {}",
                file.display()
            )));
        }
        done.push((name.clone(), old.clone(), show_value(v)));
    }
    if json {
        let set: Vec<Value> = done
            .iter()
            .map(|(n, o, v)| serde_json::json!({"name": n, "old": o, "new": v}))
            .collect();
        return print_json(&serde_json::json!({"set": set, "unchanged": dump.params.len() - done.len()}));
    }
    for (n, o, v) in &done {
        println!("{n}: {o} -> {v}");
    }
    println!(
        "{} set, {} unchanged (from {})",
        done.len(),
        dump.params.len() - done.len(),
        file.display()
    );
    Ok(())
}
