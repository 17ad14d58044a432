//! `postern events [--follow]`: reads the server-sent event stream, and when following,
//! reconnects after a drop and resumes after the last event seen.

use std::time::Duration;

use anyhow::Result;
use postern_protocol::api::EventView;

use crate::args::EventsArgs;
use crate::client::Client;
use crate::output::{self, shown};

pub async fn run(args: EventsArgs) -> Result<()> {
    let client = Client::logged_in()?;
    let mut last: Option<i64> = None;
    let mut limit = args.limit;
    loop {
        let query = match last {
            Some(id) => format!("after={id}&follow={}", args.follow),
            None => format!("limit={limit}&follow={}", args.follow),
        };
        // Only a following reader that already got through once retries, and only what may
        // pass (the server restarting, the network); an answer that is not Postern's ends it.
        let retry = args.follow && limit == 0;
        let mut events = match client.events(&query).await {
            Ok(r) => r,
            Err(e) if retry && e.is_transient() => {
                eprintln!("event stream lost ({e}); reconnecting");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let lost = loop {
            match events.next().await {
                Ok(Some(event)) => {
                    last = Some(event.id);
                    print_event(&event, args.json)?;
                }
                Ok(None) => break "event stream ended".to_owned(),
                Err(e) if args.follow && e.is_transient() => {
                    break format!("event stream lost ({e})");
                }
                Err(e) => return Err(e.into()),
            }
        };
        if !args.follow {
            return Ok(());
        }
        // Resume after the last event seen (or, if none came, with no replay).
        limit = 0;
        eprintln!("{lost}; reconnecting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_event(event: &EventView, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(event)?);
        return Ok(());
    }
    let agent = event.agent.as_ref().map(|a| a.name.as_str()).unwrap_or("-");
    println!(
        "{}  {:<18} {:<16} {:<12} {}",
        output::time(event.time),
        event.kind.as_str(),
        shown(agent),
        shown(&event.actor),
        shown(&event.detail)
    );
    Ok(())
}
