//! `postern agent`

use anyhow::Result;
use postern_agent::{Agent, AgentOptions};

use crate::args::AgentArgs;

pub async fn run(args: AgentArgs) -> Result<()> {
    let mut options = AgentOptions::new(args.server, args.data_dir);
    options.name = args.name;
    options.token = args.token;
    options.sync_rate = args.sync_rate;
    options.keepalive = args.keepalive;
    options.local_ssh = args.local_ssh;
    options.allowed_logins = args.allow_logins;
    let mut agent = Agent::start(options)?;
    println!("agent {}", agent.did);
    tokio::select! {
        result = agent.wait() => result?,
        _ = super::stop_signal() => agent.shutdown().await?,
    }
    Ok(())
}
