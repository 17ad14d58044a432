//! `postern tokens create|list|revoke`

use anyhow::Result;
use postern_protocol::api::{CreateTokenRequest, CreatedToken, TokenView};
use reqwest::Method;

use crate::args::TokensCommand;
use crate::client::{Client, segment};
use crate::output;

pub async fn run(command: TokensCommand) -> Result<()> {
    let client = Client::logged_in()?;
    match command {
        TokensCommand::Create { ttl, uses, json } => {
            let created: CreatedToken = client
                .post(
                    "/api/v1/tokens",
                    &CreateTokenRequest {
                        ttl_secs: Some(ttl.as_secs()),
                        uses: Some(uses),
                    },
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "enrollment token {}: {} use(s), expires {}; shown only now",
                    created.view.id,
                    created.view.max_uses,
                    output::time(created.view.expires_at)
                );
            }
        }
        TokensCommand::List { json } => {
            let tokens: Vec<TokenView> = client.get_list("/api/v1/tokens").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(());
            }
            let now = output::now_ms();
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    let state = if t.revoked {
                        "revoked"
                    } else if t.expires_at <= now {
                        "expired"
                    } else if t.uses >= t.max_uses {
                        "used up"
                    } else {
                        "valid"
                    };
                    vec![
                        t.id.clone(),
                        state.to_owned(),
                        format!("{}/{}", t.uses, t.max_uses),
                        output::time(t.expires_at),
                        t.created_by.clone(),
                    ]
                })
                .collect();
            output::table(&["ID", "STATE", "USES", "EXPIRES", "CREATED BY"], &rows);
        }
        TokensCommand::Revoke { id } => {
            let token: TokenView = client
                .json(client.request(Method::DELETE, &format!("/api/v1/tokens/{}", segment(&id))))
                .await?;
            println!("revoked enrollment token {}", token.id);
        }
    }
    Ok(())
}
