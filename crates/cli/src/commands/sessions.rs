//! `postern sessions [stop SESSION|AGENT]`

use anyhow::{Result, bail};
use postern_protocol::SessionId;
use postern_protocol::api::SessionView;

use crate::args::{SessionAction, SessionsArgs};
use crate::client::{Client, segment};
use crate::output::{self, shown};

pub async fn run(args: SessionsArgs) -> Result<()> {
    let client = Client::logged_in()?;
    match args.action {
        None => {
            let sessions: Vec<SessionView> = client.get_list("/api/v1/sessions").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = sessions
                .iter()
                .map(|s| {
                    let end = s.ended_at.unwrap_or_else(output::now_ms);
                    vec![
                        s.id.to_string(),
                        s.agent.name.clone(),
                        s.user.clone(),
                        s.state.to_string(),
                        output::time(s.created_at),
                        format!("{}s", (end - s.created_at).max(0) / 1000),
                        s.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID", "AGENT", "USER", "STATE", "STARTED", "DURATION", "REASON",
                ],
                &rows,
            );
        }
        Some(SessionAction::Stop { session }) => {
            let id = match SessionId::parse(&session) {
                Some(id) => id,
                None => {
                    // An agent: the caller's open session on it.
                    let open: Vec<SessionView> = client
                        .get_list(&format!("/api/v1/sessions?agent={}", segment(&session)))
                        .await?;
                    match open.into_iter().find(|s| s.state.is_open()) {
                        Some(s) => s.id,
                        None => bail!("no open session on {}", output::clip(&shown(&session))),
                    }
                }
            };
            let stopped: SessionView = client
                .post(
                    &format!("/api/v1/sessions/{id}/stop"),
                    &serde_json::json!({}),
                )
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&stopped)?);
            } else {
                println!(
                    "session {} on {} is {}",
                    stopped.id,
                    shown(&stopped.agent.name),
                    stopped.state
                );
            }
        }
    }
    Ok(())
}
