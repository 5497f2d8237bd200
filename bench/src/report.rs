//! `cairn-bench report`: the results table (markdown) and the latency plot.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde_json::Value;

/// Font for the plot's text: DejaVu Sans from Debian's fonts-dejavu-core.
const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

/// Print the markdown summary and draw `latency_vs_clients.png`.
pub fn report(results: &Path, out_dir: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(results).with_context(|| format!("read {}", results.display()))?;
    let rows: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let by = |label: &str, target: &str| -> Vec<&Value> {
        rows.iter()
            .filter(|r| r["label"] == label && r["target"] == target)
            .collect()
    };

    println!("| workload | clients | cairn client | cairn ops/s | etcd ops/s | ratio | cairn p50 / p99 / p99.9 ms | etcd p50 / p99 / p99.9 ms |");
    println!("|---|---:|---|---:|---:|---:|---|---|");
    for (label, read) in [("write", false), ("read", true), ("mixed_90r_10w", true)] {
        let e = by(label, "etcd");
        for (target, client) in [("cairn-native", "native"), ("cairn", "HTTP")] {
            for cr in by(label, target) {
                let clients = cr["clients"].as_u64().unwrap_or(0);
                let Some(er) = e.iter().find(|r| r["clients"].as_u64() == Some(clients)) else {
                    continue;
                };
                let (p50, p99, p999) = if read {
                    ("read_p50_ms", "read_p99_ms", "read_p999_ms")
                } else {
                    ("write_p50_ms", "write_p99_ms", "write_p999_ms")
                };
                println!(
                    "| {label} | {clients} | {client} | {:.0} | {:.0} | {:.2}× | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} |",
                    f(cr, "ops_per_s"),
                    f(er, "ops_per_s"),
                    f(cr, "ops_per_s") / f(er, "ops_per_s").max(1e-9),
                    f(cr, p50),
                    f(cr, p99),
                    f(cr, p999),
                    f(er, p50),
                    f(er, p99),
                    f(er, p999),
                );
            }
        }
    }

    println!();
    println!("| resource | cairn (native client) | cairn (HTTP) | etcd |");
    println!("|---|---:|---:|---:|");
    let idle = |t: &str| -> f64 {
        let v: Vec<f64> = by("idle_rss", t).iter().map(|r| f(r, "rss_kb") / 1024.0).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let cairn_idle = idle("cairn");
    println!(
        "| idle RSS per node (MiB) | {cairn_idle:.1} | {cairn_idle:.1} | {:.1} |",
        idle("etcd")
    );
    let res = |t: &str| {
        by("resources", t)
            .into_iter()
            .find(|r| r["clients"].as_u64() == Some(64))
            .cloned()
    };
    let cells = |k: &dyn Fn(&Value) -> f64| -> String {
        ["cairn-native", "cairn", "etcd"]
            .iter()
            .map(|t| res(t).map_or_else(|| "–".to_string(), |r| format!("{:.0}", k(&r))))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let per_1k = |r: &Value, k: &str| f(r, k) / f(r, "writes").max(1.0) * 1000.0;
    println!(
        "| RSS of 3 nodes after 64-client writes (MiB) | {} |",
        cells(&|r| f(r, "rss_kb_total_after") / 1024.0)
    );
    println!(
        "| CPU per 1k writes, 3 nodes (ms) | {} |",
        cells(&|r| per_1k(r, "cpu_ticks") * 1000.0 / f(r, "clk_tck").max(1.0))
    );
    println!(
        "| bytes written to disk per 1k writes, 3 nodes (KiB) | {} |",
        cells(&|r| per_1k(r, "disk_bytes") / 1024.0)
    );
    for (label, what) in [
        ("failover", "failover"),
        ("leader-restart", "leader restarted at once → next write"),
    ] {
        let fo = |t: &str| {
            by(label, t)
                .first()
                .map(|r| (f(r, "p50_ms"), f(r, "p99_ms"), r["trials"].clone()))
        };
        if let (Some(c), Some(e)) = (fo("cairn"), fo("etcd")) {
            println!(
                "| {what} p50 / p99 (ms; {} / {} trials) | {:.0} / {:.0} | (same nodes) | {:.0} / {:.0} |",
                c.2, e.2, c.0, c.1, e.0, e.1
            );
        }
    }

    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    plot(&rows, &out_dir.join("latency_vs_clients.png"))
}

fn plot(rows: &[Value], path: &Path) -> anyhow::Result<()> {
    let font = std::fs::read(FONT_PATH)
        .with_context(|| format!("read font {FONT_PATH} (apt-get install fonts-dejavu-core)"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("font {FONT_PATH} is not a usable TrueType font"))?;

    let mut series: BTreeMap<(String, &str), Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["label"] == "write") {
        let t = r["target"].as_str().unwrap_or("?").to_string();
        let x = f(r, "clients");
        series
            .entry((t.clone(), "p50"))
            .or_default()
            .push((x, f(r, "write_p50_ms")));
        series.entry((t, "p99")).or_default().push((x, f(r, "write_p99_ms")));
    }
    let y_max = series.values().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "durable write latency vs clients (3 nodes, loopback, fsync on)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (1f64..64f64)
                .log_scale()
                .with_key_points(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            0f64..y_max,
        )?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("latency (ms)")
        .label_style(("sans-serif", 14))
        .draw()?;
    for ((target, q), mut pts) in series {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = match target.as_str() {
            "cairn-native" => GREEN,
            "cairn" => BLUE,
            _ => RED,
        };
        let style = if q == "p50" {
            color.stroke_width(3)
        } else {
            color.stroke_width(1)
        };
        chart
            .draw_series(LineSeries::new(pts.clone(), style))?
            .label(format!(
                "{} {q}",
                match target.as_str() {
                    "cairn-native" => "cairn native",
                    "cairn" => "cairn HTTP",
                    other => other,
                }
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    eprintln!("plot written to {}", path.display());
    Ok(())
}
