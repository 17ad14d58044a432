//! The HTTP API client: one clear line for every way a request can fail.

use anyhow::{Result, anyhow, bail};
use postern_protocol::api::ApiError;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::credentials::{self, Credentials};

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("the server URL must start with http:// or https:// (got {server:?})");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self { http, base, token })
    }

    /// A client for the logged-in user.
    pub fn logged_in() -> Result<Self> {
        let Some(Credentials { server, token, .. }) = credentials::load()? else {
            bail!("not logged in; run postern login");
        };
        Self::new(&server, Some(token))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    /// Sends a request and returns the response if it succeeded, else a one-line error.
    pub async fn send(&self, builder: RequestBuilder) -> Result<Response> {
        let response = builder.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                anyhow!("cannot reach the server at {}: is it running?", self.base)
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Option<ApiError> = response.json().await.ok();
        Err(match (status, body) {
            (StatusCode::UNAUTHORIZED, Some(b)) if b.error == "token_expired" => {
                anyhow!("your login has expired; run postern login")
            }
            (StatusCode::UNAUTHORIZED, Some(b)) if b.error == "unauthorized" => {
                anyhow!("not logged in (or the login was ended); run postern login")
            }
            (_, Some(b)) => anyhow!("{}", b.message),
            (status, None) => anyhow!("the server answered {status}"),
        })
    }

    pub async fn json<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T> {
        let response = self.send(builder).await?;
        response
            .json()
            .await
            .map_err(|e| anyhow!("unexpected answer from the server: {e}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.request(Method::POST, path).json(body)).await
    }
}

/// Path segments typed by people (agent names, DIDs) are percent-encoded.
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
