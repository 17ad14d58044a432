//! `postern ssh AGENT [--login USER] [-q] [-- COMMAND...]`

use anyhow::{Result, anyhow};
use postern_protocol::api::{CertificateRequest, CertificateResponse, SessionView};

use crate::args::SshArgs;
use crate::client::{Client, secs, wait};
use std::io::IsTerminal;

use crate::reattach;
use crate::session::{self, PathEnd};
use crate::ssh_client::{Connection, ephemeral_key};

/// A command's connection that broke with no exit status and no word from the server (its
/// process died, or the network or a proxy cut the connection). The server is not asked why,
/// as it is when it closed the connection itself: a dead one cannot answer, and one that can
/// has no record of this break. Whether the command ended with the connection (the agent ends
/// a session's programs when its link goes) or ran on is unknown either way.
const LOST: &str = "the connection to the server was lost while the command ran: its output \
    may be incomplete, and whether it finished is unknown";

pub async fn run(args: SshArgs) -> Result<u32> {
    let client = Client::logged_in()?;
    let session = session::open(&client, &args.agent, args.quiet).await?;
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    // An interactive shell survives a broken connection (see `reattach`): it watches the
    // connection, to notice a silent cut.
    let interactive =
        command.is_none() && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let connection = match connect(&client, &session, args.login.clone(), interactive).await {
        Ok(connection) => connection,
        // The session may have ended under us (stopped, revoked): that is the news, not the
        // step that failed because of it.
        Err(e) => return Err(session::ended_now(&client, &session).await.unwrap_or(e)),
    };
    if interactive {
        return reattach::interactive(&client, &session, connection, args.login).await;
    }
    match connection.run(command).await? {
        Some(status) => Ok(status),
        None if connection.path_end() == Some(PathEnd::Lost) => Err(anyhow!(LOST)),
        None => {
            // Dropped, not ended: say why, from what the server recorded.
            drop(connection);
            Err(anyhow!(session::end_reason(&client, &session).await))
        }
    }
}

/// Certificate, data path and SSH handshake for the running `session`; `watched`: with SSH
/// keepalives, so that a connection that died silently ends (see `ssh_client::KEEPALIVE`).
pub async fn connect(
    client: &Client,
    session: &SessionView,
    login: Option<String>,
    watched: bool,
) -> Result<Connection> {
    let key = ephemeral_key()?;
    let cert: CertificateResponse = client
        .post(
            &format!("/api/v1/sessions/{}/certificate", session.id),
            &CertificateRequest {
                public_key: key.public_key().to_openssh()?,
                login,
            },
        )
        .await?;
    let stream = session::data_path(client, session).await?;
    let establish = Connection::establish(
        stream,
        &cert.host_key,
        &cert.login,
        key,
        &cert.certificate,
        watched,
    );
    tokio::time::timeout(wait(), establish).await.map_err(|_| {
        anyhow!(
            "the device did not complete the SSH handshake within {}",
            secs(wait())
        )
    })?
}
