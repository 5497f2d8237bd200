//! The CLI's "follow things" (issue 22): shell completions, `task follow`,
//! `watch` with old and new values, `param describe|dump|load`, and
//! `topic list|echo|hz`.

use std::process::Command;

use super::cli_alone;
use super::json_out;
use super::said;

/// `cairn completion SHELL` prints a completion script generated from the
/// real command line; bash accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t111_completion_scripts_for_bash_zsh_fish() {
    let out = cli_alone("127.0.0.1:1", &["completion", "bash"]);
    assert!(out.status.success(), "{}", said(&out));
    let script = String::from_utf8_lossy(&out.stdout).to_string();
    for word in ["task", "param", "watch", "--endpoints"] {
        assert!(
            script.contains(word),
            "no {word:?} in the bash completion: {}",
            said(&out)
        );
    }
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("cairn.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n refuses the script: {}", said(&check));

    for shell in ["zsh", "fish"] {
        let out = cli_alone("127.0.0.1:1", &["completion", shell]);
        assert!(out.status.success(), "{}", said(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("cairn") && text.contains("param"),
            "{shell}: {}",
            said(&out)
        );
    }
    let v = json_out(&cli_alone("127.0.0.1:1", &["-o", "json", "completion", "bash"]));
    assert_eq!(v["shell"], "bash", "{v}");
    assert_eq!(v["script"].as_str(), Some(script.as_str()));
    let out = cli_alone("127.0.0.1:1", &["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
}
