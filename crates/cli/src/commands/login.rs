//! `postern login` and `postern logout`

use anyhow::Result;
use postern_protocol::api::{LoginRequest, LoginResponse};
use reqwest::Method;

use crate::args::LoginArgs;
use crate::client::Client;
use crate::credentials::{self, Credentials};

pub async fn login(args: LoginArgs) -> Result<()> {
    let client = Client::new(&args.server, None)?;
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
    })?;
    println!(
        "logged in to {} as {} ({})",
        client.base(),
        crate::output::shown(&response.user.name),
        response.user.role
    );
    Ok(())
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
