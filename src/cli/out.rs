//! Output helpers shared by the commands: tables, JSON, times, the words
//! people use for enum variants.

use anyhow::Context;
use cairn::api::WriteResult;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// An answer as its type. A command prints `-o json` from the answer as it
/// came (so scripts see every field, new ones too) and its table from the
/// typed answer.
pub(crate) fn typed<T: DeserializeOwned>(v: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(v).with_context(|| format!("the node's answer is not {what}"))
}

/// A write's answer, as its type.
pub(crate) fn write_result(r: Option<Value>) -> anyhow::Result<WriteResult> {
    typed(r.unwrap_or_default(), "a write's result (index and response)")
}

/// An enum's variant by its serialised name: `TaskCreated`.
pub(crate) fn variant_of(v: &impl Serialize) -> String {
    variant(&serde_json::to_value(v).unwrap_or_default())
}

/// An enum's variant by its serialised name, as people write it
/// (`GpsOnly` is `gps-only`, `Aborted { .. }` is `aborted`).
pub(crate) fn name_of(v: &impl Serialize) -> String {
    kebab(&variant_of(v))
}

/// A number as its JSON reads (`1.0`, not `1`).
pub(crate) fn float(f: f64) -> String {
    s(&Value::from(f))
}

/// A value as compact JSON (a string without quotes; `-` for none), as
/// the answer's JSON reads.
pub(crate) fn json_text(v: &impl Serialize) -> String {
    s(&serde_json::to_value(v).unwrap_or_default())
}

/// A value, or `-` without one.
pub(crate) fn or_dash(v: Option<impl std::fmt::Display>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Print rows as a left-aligned table with a header.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An externally tagged enum (`{"Variant": {...}}` or `"Variant"`) by name.
pub(crate) fn variant(v: &Value) -> String {
    match v {
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A Rust variant name as people write it: `GpsOnly` is `gps-only`
/// (as `cairn policy set` takes it), `Failed` is `failed`.
pub(crate) fn kebab(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(ch.to_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// A time in ms since the Unix epoch as RFC 3339 (UTC, whole seconds) and
/// how long ago it was: `2026-12-07T12:57:38Z (12s ago)`.
pub(crate) fn when(ms: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return format!("{ms} ms since the epoch");
    };
    let stamp = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(ms);
    let age = if now_ms >= ms {
        format!("{} ago", span((now_ms - ms) / 1000))
    } else {
        format!("in {}", span((ms - now_ms) / 1000))
    };
    format!("{stamp} ({age})")
}

/// Seconds as the two largest units: `12s`, `5m 3s`, `2h 10m`, `3d 4h`.
fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

pub(crate) fn stale_q(stale: bool) -> &'static str {
    if stale {
        "?consistency=stale"
    } else {
        ""
    }
}

/// A write's answer: `index` and the state machine's response.
pub(crate) fn print_write(out_json: bool, what: &str, r: Option<Value>) -> anyhow::Result<()> {
    if out_json {
        return print_json(&r.unwrap_or_default());
    }
    println!("{what}: committed at index {}", write_result(r)?.index);
    Ok(())
}

pub(crate) fn strip_scheme(ep: &str) -> &str {
    ep.trim_start_matches("http://").trim_start_matches("https://")
}

pub(crate) fn opt(v: Option<u64>) -> String {
    or_dash(v)
}
