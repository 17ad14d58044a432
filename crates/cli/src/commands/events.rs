//! `postern events [--follow]`: reads the server-sent event stream, and when following,
//! reconnects after a drop and resumes after the last event seen.

use std::time::Duration;

use anyhow::Result;
use postern_protocol::api::EventView;
use reqwest::Method;

use crate::args::EventsArgs;
use crate::client::Client;
use crate::output;
use crate::sse::EventReader;

pub async fn run(args: EventsArgs) -> Result<()> {
    let client = Client::logged_in()?;
    let mut last: Option<i64> = None;
    let mut limit = args.limit;
    loop {
        let query = match last {
            Some(id) => format!("after={id}&follow={}", args.follow),
            None => format!("limit={limit}&follow={}", args.follow),
        };
        let request = client
            .request(Method::GET, &format!("/api/v1/events?{query}"))
            .header("accept", "text/event-stream");
        let response = match client.send(request).await {
            Ok(r) => r,
            // Only a following reader that already got through once retries.
            Err(e) if args.follow && limit == 0 => {
                eprintln!("event stream lost ({e}); reconnecting");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut events = EventReader::new(response.bytes_stream());
        while let Some(event) = events.next().await? {
            last = Some(event.id);
            print_event(&event, args.json)?;
        }
        if !args.follow {
            return Ok(());
        }
        // Resume after the last event seen (or, if none came, with no replay).
        limit = 0;
        eprintln!("event stream ended; reconnecting");
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
        agent,
        event.actor,
        event.detail
    );
    Ok(())
}
