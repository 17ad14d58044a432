//! `postern agents [approve|reject|revoke AGENT]`

use anyhow::Result;
use postern_protocol::AgentDid;
use postern_protocol::api::{AgentView, Liveness};

use crate::args::{AgentAction, AgentsArgs};
use crate::client::{Client, segment};
use crate::output::{self, shown};

fn short_did(did: &str) -> String {
    did.parse::<AgentDid>()
        .map(|d| d.short())
        .unwrap_or_else(|_| did.to_owned())
}

pub async fn run(args: AgentsArgs) -> Result<()> {
    let client = Client::logged_in()?;
    let Some(action) = args.action else {
        let agents: Vec<AgentView> = client.get_list("/api/v1/agents").await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&agents)?);
            return Ok(());
        }
        if agents.is_empty() {
            println!(
                "no agents yet: start one with postern agent --server HOST:2200 --data-dir DIR"
            );
            return Ok(());
        }
        let rows: Vec<Vec<String>> = agents
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.status.to_string(),
                    match a.liveness {
                        Liveness::Online => "online",
                        Liveness::NotResponding => "not responding",
                        Liveness::Offline => "offline",
                    }
                    .to_owned(),
                    a.last_seen
                        .map(output::ago)
                        .unwrap_or_else(|| "never".into()),
                    short_did(&a.did),
                    format!("{} {}", a.facts.os, a.facts.arch),
                ]
            })
            .collect();
        output::table(
            &["NAME", "STATUS", "LINK", "LAST SEEN", "DID", "SYSTEM"],
            &rows,
        );
        return Ok(());
    };
    let (agent, verb) = match &action {
        AgentAction::Approve { agent } => (agent, "approve"),
        AgentAction::Reject { agent } => (agent, "reject"),
        AgentAction::Revoke { agent } => (agent, "revoke"),
    };
    let updated: AgentView = client
        .post(
            &format!("/api/v1/agents/{}/{verb}", segment(agent)),
            &serde_json::json!({}),
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&updated)?);
    } else {
        println!(
            "{} is now {} ({})",
            shown(&updated.name),
            updated.status,
            shown(&updated.did)
        );
    }
    Ok(())
}
