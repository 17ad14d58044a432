//! `postern login` and `postern logout`. Logging in to an HTTPS server no system CA vouches
//! for pins its certificate (asked once on a terminal, or given by --fingerprint / --ca-cert)
//! before the password is sent.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use postern_protocol::api::{LoginRequest, LoginResponse};
use reqwest::Method;

use crate::args::LoginArgs;
use crate::client::{Client, ClientError};
use crate::credentials::{self, Credentials};
use crate::tls::{Origin, Refusal, Trust};

pub async fn login(args: LoginArgs) -> Result<()> {
    let (trust, origin) = trust(&args)?;
    let mut client = Client::new(&args.server, None, trust.as_ref(), origin)?;
    let trust = if client.tls().is_some() {
        match check_certificate(&client).await? {
            None => trust,
            Some(fingerprint) => {
                // Asked, and said yes: the same server, now pinned.
                let pinned = Some(Trust::Fingerprint(fingerprint));
                client = Client::new(&args.server, None, pinned.as_ref(), Origin::Given)?;
                pinned
            }
        }
    } else {
        trust
    };
    let password = super::read_password("Password: ", args.password_stdin)?;
    let response: LoginResponse = client
        .post(
            "/api/v1/login",
            &LoginRequest {
                user: args.user.clone(),
                password,
            },
        )
        .await?;
    credentials::save(&Credentials {
        server: client.base().to_owned(),
        user: response.user.name.clone(),
        token: response.token,
        trust,
    })?;
    println!(
        "logged in to {} as {} ({})",
        client.base(),
        crate::output::shown(&response.user.name),
        response.user.role
    );
    Ok(())
}

/// What this login trusts: the flags, else what an earlier login to the same server pinned
/// (so a changed certificate is refused, not asked about again).
fn trust(args: &LoginArgs) -> Result<(Option<Trust>, Origin)> {
    if let Some(text) = &args.fingerprint {
        let given = Trust::fingerprint(text).map_err(anyhow::Error::msg)?;
        return Ok((Some(given), Origin::Given));
    }
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            bail!("{} holds no PEM certificate", path.display());
        }
        return Ok((Some(Trust::CaCert(pem)), Origin::Given));
    }
    let base = args.server.trim_end_matches('/');
    let pinned = credentials::load()
        .ok()
        .flatten()
        .filter(|c| c.server == base)
        .and_then(|c| c.trust);
    Ok((pinned, Origin::Pinned))
}

/// Connects once before the password goes anywhere. A certificate no CA vouches for is shown
/// and, on a terminal, trusted if the user says so (returning its fingerprint to pin); anywhere
/// else, and for a changed pinned certificate, the login is refused with the fingerprint.
async fn check_certificate(client: &Client) -> Result<Option<String>> {
    let error = match client
        .send(client.request(Method::GET, "/api/v1/health"))
        .await
    {
        Ok(_) => return Ok(None),
        Err(error) => error,
    };
    let ClientError::Certificate {
        refusal: Refusal::Untrusted {
            fingerprint,
            reason,
        },
        ..
    } = &error
    else {
        return Err(error.into());
    };
    let stdin = std::io::stdin();
    if !(stdin.is_terminal() && std::io::stderr().is_terminal()) {
        return Err(error.into());
    }
    eprintln!(
        "The certificate of {} is not signed by a CA this system trusts ({reason}).",
        client.base()
    );
    eprintln!("Its fingerprint is {fingerprint}");
    eprint!(
        "Compare it with the one postern server printed at start. Trust this certificate? [y/N] "
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        bail!("not logged in: the server's certificate was not trusted");
    }
    Ok(Some(fingerprint.clone()))
}

pub async fn logout() -> Result<()> {
    if credentials::load()?.is_none() {
        println!("not logged in");
        return Ok(());
    }
    let client = Client::logged_in()?;
    // End the login on the server too; forget it locally whatever the server says.
    let ended = client
        .send(client.request(Method::POST, "/api/v1/logout"))
        .await;
    credentials::remove()?;
    match ended {
        Ok(_) => println!("logged out"),
        Err(e) => println!("logged out locally ({e})"),
    }
    Ok(())
}
