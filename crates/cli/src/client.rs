//! The HTTP API client: one clear line for every way a request can fail — unreachable, silent,
//! not a Postern server, too large, or the API's own error — and a bound on all it waits for
//! and reads, so that no server, broken or hostile, can hang the CLI or fill its memory.

use std::sync::OnceLock;
use std::time::Duration;

use postern_protocol::api::ApiError;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout, timeout_at};

use crate::credentials::{self, Credentials};
use crate::output;
use crate::sse::EventReader;
use crate::tls::{Origin, Refusal, TlsClient, Trust};

/// Time to set up the TCP connection: a reachable server answers a SYN in milliseconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the CLI waits for the server to say anything: the status of an answer, the
/// opening of a data path, the next event or keepalive on the event stream. The server sends a
/// keepalive every 15 s, so 45 s is three missed ones; the slowest legitimate answer (a login,
/// argon2 on a busy server) takes about a second. `--timeout` changes it.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(45);

static WAIT: OnceLock<Duration> = OnceLock::new();

/// Sets the wait for this process (from `--timeout`), once, before any request.
pub fn set_wait(wait: Duration) {
    let _ = WAIT.set(wait);
}

/// See [`DEFAULT_WAIT`].
pub fn wait() -> Duration {
    WAIT.get().copied().unwrap_or(DEFAULT_WAIT)
}

/// A whole (non-streamed) body must arrive within twice the wait: the largest list is a few
/// MiB, a fraction of a second on any link that carries a shell.
fn body_deadline() -> Duration {
    wait() * 2
}

/// "45 s", "1.5 s".
pub fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Bounds on what the CLI reads, per kind of answer. Lists (agents, sessions, tokens) are
/// about 1 KiB per row: 16 MiB holds 10,000s of rows.
pub const MAX_LIST_BODY: usize = 16 << 20;
/// One object (a session, a login, a certificate): a few KiB.
pub const MAX_OBJECT_BODY: usize = 1 << 20;
/// An error answer: one line of JSON.
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// One server-sent event: an event view is under 2 KiB.
pub const MAX_EVENT: usize = 1 << 20;

/// What went wrong with a request, each with its one-line explanation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {server}: is it running?")]
    Unreachable { server: String },
    #[error("the server at {server} did not answer in time: {what}")]
    Timeout { server: String, what: String },
    #[error("{server} did not answer as a Postern server ({got})")]
    NotPostern { server: String, got: String },
    #[error("{server} sent more than {limit} for {what}; not a Postern server?")]
    TooLarge {
        server: String,
        what: &'static str,
        limit: String,
    },
    /// The request could not even be made (a URL over the `http` crate's 64 KiB limit).
    #[error("this request cannot be sent (is an argument far too long?)")]
    Unsendable { source: reqwest::Error },
    #[error("the connection to {server} failed")]
    Transport {
        server: String,
        source: reqwest::Error,
    },
    /// The server's certificate was refused (changed since it was pinned, or untrusted).
    #[error("{message}")]
    Certificate { refusal: Refusal, message: String },
    #[error("your login has expired; run postern login")]
    Expired,
    #[error("not logged in (or the login was ended); run postern login")]
    Unauthorized,
    /// The API's own refusal, its message made safe to print.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
}

impl ClientError {
    /// Worth trying again later: the server may come back (restart, network).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Api { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// "16 MiB", "64 KiB".
pub fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// For `https://` servers: the TLS setup every connection (WebSockets too) uses.
    tls: Option<TlsClient>,
}

impl Client {
    /// A client for `server`, trusting the system's roots and `trust` (from `origin`) for HTTPS.
    pub fn new(
        server: &str,
        token: Option<String>,
        trust: Option<&Trust>,
        origin: Origin,
    ) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!(
                "the server URL must start with http:// or https:// (got {:?})",
                output::clip(server)
            );
        }
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        let tls = if base.starts_with("https://") {
            let tls = TlsClient::new(trust, origin)?;
            builder = builder.use_preconfigured_tls((*tls.config).clone());
            Some(tls)
        } else {
            None
        };
        Ok(Self {
            http: builder.build()?,
            base,
            token,
            tls,
        })
    }

    /// A client for the logged-in user.
    pub fn logged_in() -> anyhow::Result<Self> {
        let Some(Credentials {
            server,
            token,
            trust,
            ..
        }) = credentials::load()?
        else {
            anyhow::bail!("not logged in; run postern login");
        };
        Self::new(&server, Some(token), trust.as_ref(), Origin::Pinned)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn tls(&self) -> Option<&TlsClient> {
        self.tls.as_ref()
    }

    /// The error for a connection that failed, naming a refused certificate if that was why.
    pub fn refused(&self) -> Option<ClientError> {
        let refusal = self.tls.as_ref()?.refusal()?;
        Some(ClientError::Certificate {
            message: crate::tls::explain(&self.base, &refusal),
            refusal,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    fn timeout(&self, what: impl Into<String>) -> ClientError {
        ClientError::Timeout {
            server: self.base.clone(),
            what: what.into(),
        }
    }

    fn not_postern(&self, got: impl Into<String>) -> ClientError {
        ClientError::NotPostern {
            server: self.base.clone(),
            got: got.into(),
        }
    }

    /// Sends a request and returns the response if it succeeded, else a one-line error.
    pub async fn send(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        let sent = timeout(wait(), builder.send())
            .await
            .map_err(|_| self.timeout(format!("no response within {}", secs(wait()))))?;
        let response = sent.map_err(|e| {
            if let Some(refused) = self.refused() {
                refused
            } else if e.is_connect() && e.is_timeout() {
                self.timeout(format!("no connection within {}", secs(CONNECT_TIMEOUT)))
            } else if e.is_builder() {
                ClientError::Unsendable { source: e }
            } else if e.is_connect() {
                ClientError::Unreachable {
                    server: self.base.clone(),
                }
            } else {
                ClientError::Transport {
                    server: self.base.clone(),
                    source: e,
                }
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let kind = content_type(&response);
        let body = self.read(response, MAX_ERROR_BODY, "an error").await?;
        let parsed: Option<ApiError> = (kind.starts_with("application/json"))
            .then(|| serde_json::from_slice(&body).ok())
            .flatten();
        Err(match (status, parsed) {
            (StatusCode::UNAUTHORIZED, Some(b)) if b.error == "token_expired" => {
                ClientError::Expired
            }
            (StatusCode::UNAUTHORIZED, Some(b)) if b.error == "unauthorized" => {
                ClientError::Unauthorized
            }
            (_, Some(b)) => ClientError::Api {
                status,
                message: output::clip(&output::shown(&b.message)),
            },
            (status, None) => self.not_postern(format!("got {status}, {}", describe(&kind))),
        })
    }

    /// Reads a whole body, at most `limit` bytes and within [`body_deadline`].
    async fn read(
        &self,
        mut response: Response,
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<u8>, ClientError> {
        let too_large = || ClientError::TooLarge {
            server: self.base.clone(),
            what,
            limit: size(limit),
        };
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large());
        }
        let deadline = Instant::now() + body_deadline();
        let mut body = Vec::new();
        loop {
            let chunk = timeout_at(deadline, response.chunk())
                .await
                .map_err(|_| {
                    self.timeout(format!(
                        "{what} took longer than {} to arrive",
                        secs(body_deadline())
                    ))
                })?
                .map_err(|e| ClientError::Transport {
                    server: self.base.clone(),
                    source: e,
                })?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
    }

    /// Sends a request and reads its JSON answer, at most `limit` bytes.
    pub async fn json_bounded<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
        limit: usize,
    ) -> Result<T, ClientError> {
        let response = self.send(builder).await?;
        let kind = content_type(&response);
        if !kind.starts_with("application/json") {
            return Err(self.not_postern(format!("got {}", describe(&kind))));
        }
        let body = self.read(response, limit, "one answer").await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.not_postern(format!("JSON of another shape: {e}")))
    }

    /// One object as JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
    ) -> Result<T, ClientError> {
        self.json_bounded(builder, MAX_OBJECT_BODY).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path)).await
    }

    /// A list (agents, sessions, tokens): a larger bound than one object.
    pub async fn get_list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        self.json_bounded(self.request(Method::GET, path), MAX_LIST_BODY)
            .await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    /// The event stream (`/api/v1/events?{query}`), checked to be one.
    pub async fn events(&self, query: &str) -> Result<EventReader, ClientError> {
        let request = self
            .request(Method::GET, &format!("/api/v1/events?{query}"))
            .header("accept", "text/event-stream");
        let response = self.send(request).await?;
        let kind = content_type(&response);
        if !kind.starts_with("text/event-stream") {
            return Err(self.not_postern(format!("got {}", describe(&kind))));
        }
        Ok(EventReader::new(response, self.base.clone()))
    }
}

fn content_type(response: &Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// "text/html", for the message that says the answer is not Postern's.
fn describe(content_type: &str) -> String {
    match content_type.split(';').next().map(str::trim) {
        Some("") | None => "no content type".to_owned(),
        Some(kind) => output::clip(&output::shown(kind)),
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
