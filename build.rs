//! Records which commit the binary is built from, for `GET /version` and
//! the `cairn_build_info` metric: a rolling upgrade must be able to see
//! which build each node runs. `CAIRN_BUILD_COMMIT` overrides it (a build
//! from a source tarball has no git); without either it is "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=CAIRN_BUILD_COMMIT");
    let commit = std::env::var("CAIRN_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Built again when HEAD moves (a commit, a checkout): HEAD itself, the
    // branch it names, and packed refs. Only files that exist: cargo reruns
    // a script every time for a missing one.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    println!(
        "cargo:rustc-env=CAIRN_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
