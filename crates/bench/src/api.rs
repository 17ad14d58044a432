//! The bench's own client of the HTTP API (bearer login) and of its event stream.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use postern_protocol::SessionId;
use postern_protocol::api::{
    AgentPresence, CreateTokenRequest, CreatedToken, EventView, LoginRequest, LoginResponse,
    SessionView,
};
use postern_protocol::sse::SseDecoder;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// Logs in as `user`; `base` is `http://HOST:PORT`.
    pub async fn login(base: &str, user: &str, password: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .build()?;
        let mut api = Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: String::new(),
        };
        let response: LoginResponse = api
            .post(
                "/login",
                &LoginRequest {
                    user: user.to_owned(),
                    password: password.to_owned(),
                },
            )
            .await
            .context("cannot log in to the bench's server")?;
        api.token = response.token;
        Ok(api)
    }

    /// `Bearer TOKEN`, for clients of the API's WebSockets.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let response = request.bearer_auth(&self.token).send().await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("HTTP {status}: {text}");
        }
        Ok(response.json().await?)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(self.url(path)))
            .await
            .with_context(|| format!("GET {path}"))
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.send(self.http.post(self.url(path)).json(body))
            .await
            .with_context(|| format!("POST {path}"))
    }

    /// An enrollment token that approves `uses` agents within the hour.
    pub async fn create_token(&self, uses: u32) -> Result<String> {
        let created: CreatedToken = self
            .post(
                "/tokens",
                &CreateTokenRequest {
                    ttl_secs: Some(3600),
                    uses: Some(uses),
                },
            )
            .await?;
        Ok(created.token)
    }

    /// How many agents are connected, as the server sees it.
    pub async fn online_count(&self) -> Result<usize> {
        let presence: Vec<AgentPresence> = self.get("/presence").await?;
        Ok(presence.len())
    }

    /// How many agents match `query` (`GET /agents?QUERY&limit=1`, its `X-Total-Count`).
    pub async fn agents_total(&self, query: &str) -> Result<u64> {
        let path = format!("/agents?{query}&limit=1");
        let response = self
            .http
            .get(self.url(&path))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        if !response.status().is_success() {
            bail!("GET {path}: HTTP {}", response.status());
        }
        response
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("GET {path}: no X-Total-Count"))
    }

    pub async fn start_session(&self, agent: &str) -> Result<SessionView> {
        self.post(&format!("/agents/{agent}/sessions"), &serde_json::json!({}))
            .await
    }

    pub async fn stop_session(&self, id: &SessionId) -> Result<SessionView> {
        self.post(&format!("/sessions/{id}/stop"), &serde_json::json!({}))
            .await
    }

    /// The live event stream, from now on.
    pub async fn events(&self) -> Result<Events> {
        let response = self
            .http
            .get(self.url("/events?limit=0"))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("GET /events")?;
        if !response.status().is_success() {
            bail!("GET /events: HTTP {}", response.status());
        }
        Ok(Events {
            response,
            decoder: SseDecoder::new(1 << 20),
            received: Instant::now(),
        })
    }
}

/// Server-sent events, each stamped with the moment its bytes reached the bench.
pub struct Events {
    response: reqwest::Response,
    decoder: SseDecoder,
    received: Instant,
}

impl Events {
    pub async fn next(&mut self) -> Result<(Instant, EventView)> {
        loop {
            if let Some(event) = self.decoder.next_event()? {
                let view = serde_json::from_str(&event.data)
                    .with_context(|| format!("unreadable event {:?}", event.data))?;
                return Ok((self.received, view));
            }
            let chunk = self
                .response
                .chunk()
                .await?
                .ok_or_else(|| anyhow!("the server closed the event stream"))?;
            self.received = Instant::now();
            self.decoder.push(&chunk);
        }
    }

    /// The first event `pick` accepts, within `limit`.
    pub async fn wait_for<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut pick: impl FnMut(&EventView) -> Option<T>,
    ) -> Result<(Instant, T)> {
        let found = tokio::time::timeout(limit, async {
            loop {
                let (at, event) = self.next().await?;
                if let Some(value) = pick(&event) {
                    return Ok::<_, anyhow::Error>((at, value));
                }
            }
        })
        .await;
        match found {
            Ok(result) => result,
            Err(_) => bail!("no {what} event within {limit:?}"),
        }
    }
}
