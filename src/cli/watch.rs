//! `cairn watch`: applied changes as they happen.

use cairn::api::ChangeJson;
use cairn::client::Client;
use clap::Args;

use super::out::variant_of;

#[derive(Args)]
pub struct WatchArgs {
    /// First log index to show (default: changes from now on).
    #[arg(long)]
    from: Option<u64>,
    /// Exit after this many changes.
    #[arg(long)]
    count: Option<u64>,
}

/// Runs `cairn watch`.
pub async fn run(client: &Client, out_json: bool, args: WatchArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut seen = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    if !out_json {
        println!("{:<8} {:<6} {:<22} RESULT", "INDEX", "TERM", "COMMAND");
    }
    client
        .watch(args.from, |ev| {
            if out_json {
                // One JSON object per line (NDJSON), for scripts.
                println!("{}", ev.data);
            } else {
                let (index, term, command, result) = match serde_json::from_str::<ChangeJson>(&ev.data) {
                    Ok(c) => (
                        c.index.to_string(),
                        c.term.to_string(),
                        variant_of(&c.command),
                        match &c.response {
                            None => "(replayed)".to_string(),
                            Some(Err(e)) => format!("refused: {}", variant_of(e)),
                            Some(Ok(r)) => variant_of(r),
                        },
                    ),
                    // Not a change (a newer node's?): as little as is known.
                    Err(_) => ("-".into(), "-".into(), "null".into(), "(replayed)".into()),
                };
                println!("{index:<8} {term:<6} {command:<22} {result}");
            }
            let _ = std::io::stdout().flush();
            seen += 1;
            args.count.is_none_or(|c| seen < c)
        })
        .await?;
    Ok(())
}
