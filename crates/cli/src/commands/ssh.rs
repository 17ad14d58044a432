//! `postern ssh AGENT [--login USER] [-q] [-- COMMAND...]`

use anyhow::{Result, anyhow};
use postern_protocol::api::{CertificateRequest, CertificateResponse};

use crate::args::SshArgs;
use crate::client::{Client, secs, wait};
use crate::session;
use crate::ssh_client::{Connection, ephemeral_key};

pub async fn run(args: SshArgs) -> Result<u32> {
    let client = Client::logged_in()?;
    let session = session::open(&client, &args.agent, args.quiet).await?;
    let key = ephemeral_key()?;
    let cert: CertificateResponse = client
        .post(
            &format!("/api/v1/sessions/{}/certificate", session.id),
            &CertificateRequest {
                public_key: key.public_key().to_openssh()?,
                login: args.login.clone(),
            },
        )
        .await?;
    let stream = session::data_path(&client, &session).await?;
    let establish =
        Connection::establish(stream, &cert.host_key, &cert.login, key, &cert.certificate);
    let connection = tokio::time::timeout(wait(), establish)
        .await
        .map_err(|_| {
            anyhow!(
                "the device did not complete the SSH handshake within {}",
                secs(wait())
            )
        })??;
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    connection.run(command).await
}
