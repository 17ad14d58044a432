//! Prometheus metrics: counters and the time-to-running histogram, recorded where the domain
//! changes (a link registered, a session's transition, a login, a certificate), and gauges
//! read from the server's state when scraped (`gauges.rs`), so that they cannot drift.
//!
//! Each server has its own recorder (not the process-wide one of the `metrics` macros): tests
//! run several servers in one process. No label names an agent, a user or a session: every
//! label takes a handful of values. Without `--metrics-listen` nothing is recorded.

mod gauges;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use postern_protocol::SessionState;

pub use gauges::{GaugeSources, Gauges};

use crate::sessions::EndReason;

/// Every metric family the server exports, with its type and meaning: the HELP text, the
/// table in docs/ARCHITECTURE.md and the dashboard test all come from here.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        LINKS_OPENED,
        Kind::Counter,
        "Agent links registered (control channel up).",
    ),
    (
        LINKS_CLOSED,
        Kind::Counter,
        "Agent links ended, by how: closed, lost (silent past the heartbeat timeout) or replaced (the agent linked again).",
    ),
    (
        SESSION_TRANSITIONS,
        Kind::Counter,
        "Session transitions, by the state entered.",
    ),
    (
        SESSIONS_ENDED,
        Kind::Counter,
        "Sessions ended, by final state and reason.",
    ),
    (
        TIME_TO_RUNNING,
        Kind::Histogram,
        "Seconds from a session's request to its tunnel running.",
    ),
    (
        FORWARDS_REFUSED,
        Kind::Counter,
        "Tunnel port requests refused: no free port in the range, not allowed (not the agent's starting session), or an error.",
    ),
    (
        TUNNEL_BYTES,
        Kind::Counter,
        "Bytes carried by session tunnels (tunnel ports, data paths, web terminals), by direction.",
    ),
    (
        CERTIFICATES_ISSUED,
        Kind::Counter,
        "User certificates signed.",
    ),
    (LOGINS, Kind::Counter, "Password logins, by result."),
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "HTTP requests on the main listener, by route template, method and status.",
    ),
    (
        gauges::AGENTS,
        Kind::Gauge,
        "Agents in the store, by status.",
    ),
    (
        gauges::AGENTS_CONNECTED,
        Kind::Gauge,
        "Agents with a link to this server, by liveness.",
    ),
    (gauges::SESSIONS, Kind::Gauge, "Open sessions, by state."),
    (
        gauges::TUNNEL_PORTS_IN_USE,
        Kind::Gauge,
        "Tunnel ports held by running sessions on this server.",
    ),
    (
        gauges::TUNNEL_PORTS_CAPACITY,
        Kind::Gauge,
        "Tunnel ports in the configured range.",
    ),
    (
        gauges::EVENT_SUBSCRIBERS,
        Kind::Gauge,
        "Open event streams (GET /api/v1/events).",
    ),
    (
        gauges::STORE_UP,
        Kind::Gauge,
        "1 when the store answered this scrape's reads, else 0 (and the store's gauges are absent).",
    ),
];

pub const LINKS_OPENED: &str = "postern_links_opened_total";
pub const LINKS_CLOSED: &str = "postern_links_closed_total";
pub const SESSION_TRANSITIONS: &str = "postern_session_transitions_total";
pub const SESSIONS_ENDED: &str = "postern_sessions_ended_total";
pub const TIME_TO_RUNNING: &str = "postern_session_time_to_running_seconds";
pub const FORWARDS_REFUSED: &str = "postern_tunnel_forwards_refused_total";
pub const TUNNEL_BYTES: &str = "postern_tunnel_bytes_total";
pub const CERTIFICATES_ISSUED: &str = "postern_certificates_issued_total";
pub const LOGINS: &str = "postern_logins_total";
pub const HTTP_REQUESTS: &str = "postern_http_requests_total";

/// Time to running is a few round trips on a good link, seconds on a slow one, and up to the
/// session timeout (60 s by default) at worst.
const TIME_TO_RUNNING_BUCKETS: &[f64] =
    &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// How an agent's link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    Closed,
    Lost,
    Replaced,
    /// Cut as stale: the agent linked to another node since.
    Stale,
}

impl LinkEnd {
    const ALL: [LinkEnd; 4] = [
        LinkEnd::Closed,
        LinkEnd::Lost,
        LinkEnd::Replaced,
        LinkEnd::Stale,
    ];

    fn as_str(self) -> &'static str {
        match self {
            LinkEnd::Closed => "closed",
            LinkEnd::Lost => "lost",
            LinkEnd::Replaced => "replaced",
            LinkEnd::Stale => "stale",
        }
    }
}

/// Why a tunnel port was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardRefusal {
    NoFreePort,
    /// Not this agent's starting session.
    NotAllowed,
    /// The store failed, or the session changed under the request.
    Error,
}

impl ForwardRefusal {
    const ALL: [ForwardRefusal; 3] = [
        ForwardRefusal::NoFreePort,
        ForwardRefusal::NotAllowed,
        ForwardRefusal::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ForwardRefusal::NoFreePort => "no_free_port",
            ForwardRefusal::NotAllowed => "not_allowed",
            ForwardRefusal::Error => "error",
        }
    }
}

/// How a login attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginResult {
    Success,
    /// Wrong name or password.
    Failure,
    /// Refused by the slow-down before any check.
    Throttled,
    /// No verifier slot free.
    Busy,
    /// The store failed.
    Error,
}

impl LoginResult {
    const ALL: [LoginResult; 5] = [
        LoginResult::Success,
        LoginResult::Failure,
        LoginResult::Throttled,
        LoginResult::Busy,
        LoginResult::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            LoginResult::Success => "success",
            LoginResult::Failure => "failure",
            LoginResult::Throttled => "throttled",
            LoginResult::Busy => "busy",
            LoginResult::Error => "error",
        }
    }
}

/// Which way tunnel bytes went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToAgent,
    FromAgent,
}

/// The server's metrics; cheap to clone. `Metrics::default()` records nothing.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Registry>>);

struct Registry {
    recorder: PrometheusRecorder,
    links_opened: Counter,
    links_closed: [Counter; LinkEnd::ALL.len()],
    transitions: [Counter; 7],
    /// By final state (stopped, failed) × reason.
    ended: Vec<((SessionState, &'static str), Counter)>,
    time_to_running: Histogram,
    forwards_refused: [Counter; 3],
    tunnel_bytes: [Counter; 2],
    certificates: Counter,
    logins: [Counter; 5],
}

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    /// A recorder with every series registered at zero, so that rates and the dashboard
    /// work from the first scrape.
    pub fn enabled() -> Self {
        let recorder = match PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(TIME_TO_RUNNING.into()),
                TIME_TO_RUNNING_BUCKETS,
            )
            .map(PrometheusBuilder::build_recorder)
        {
            Ok(recorder) => recorder,
            // Only an empty bucket list is refused; ours is a constant.
            Err(error) => {
                tracing::error!(%error, "metrics are off: the recorder cannot be built");
                return Self::default();
            }
        };
        for (name, kind, help) in FAMILIES {
            let (name, help) = (metrics::KeyName::from(*name), (*help).into());
            match kind {
                Kind::Counter => recorder.describe_counter(name, None::<Unit>, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
                // Rendered by `gauges.rs`, which writes its own HELP lines.
                Kind::Gauge => {}
            }
        }
        let counter = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            recorder.register_counter(&key(name, labels), &METADATA)
        };
        let ended = [SessionState::Stopped, SessionState::Failed]
            .into_iter()
            .flat_map(|state| EndReason::LABELS.iter().map(move |r| (state, *r)))
            .map(|(state, reason)| {
                let c = counter(
                    SESSIONS_ENDED,
                    &[("state", state.as_str()), ("reason", reason)],
                );
                ((state, reason), c)
            })
            .collect();
        let registry = Registry {
            links_opened: counter(LINKS_OPENED, &[]),
            links_closed: LinkEnd::ALL.map(|e| counter(LINKS_CLOSED, &[("reason", e.as_str())])),
            transitions: SessionState::ALL
                .map(|s| counter(SESSION_TRANSITIONS, &[("state", s.as_str())])),
            ended,
            time_to_running: recorder.register_histogram(&key(TIME_TO_RUNNING, &[]), &METADATA),
            forwards_refused: ForwardRefusal::ALL
                .map(|r| counter(FORWARDS_REFUSED, &[("reason", r.as_str())])),
            tunnel_bytes: ["to_agent", "from_agent"]
                .map(|d| counter(TUNNEL_BYTES, &[("direction", d)])),
            certificates: counter(CERTIFICATES_ISSUED, &[]),
            logins: LoginResult::ALL.map(|r| counter(LOGINS, &[("result", r.as_str())])),
            recorder,
        };
        Self(Some(Arc::new(registry)))
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    pub fn link_opened(&self) {
        if let Some(r) = &self.0 {
            r.links_opened.increment(1);
        }
    }

    pub fn link_closed(&self, how: LinkEnd) {
        if let Some(r) = &self.0 {
            let i = LinkEnd::ALL.iter().position(|e| *e == how).unwrap_or(0);
            r.links_closed[i].increment(1);
        }
    }

    /// A session entered `state`; `requested_at` and `now` in unix ms, `reason` as recorded.
    pub fn session_entered(
        &self,
        state: SessionState,
        reason: Option<&str>,
        requested_at: i64,
        now: i64,
    ) {
        let Some(r) = &self.0 else { return };
        let i = SessionState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        r.transitions[i].increment(1);
        if state == SessionState::Running {
            let ms = now.saturating_sub(requested_at).max(0);
            r.time_to_running
                .record(Duration::from_millis(ms.unsigned_abs()).as_secs_f64());
        }
        if state.is_final() {
            let label = EndReason::label_of(reason);
            if let Some((_, c)) = r.ended.iter().find(|(k, _)| *k == (state, label)) {
                c.increment(1);
            }
        }
    }

    pub fn forward_refused(&self, why: ForwardRefusal) {
        if let Some(r) = &self.0 {
            let i = ForwardRefusal::ALL
                .iter()
                .position(|e| *e == why)
                .unwrap_or(0);
            r.forwards_refused[i].increment(1);
        }
    }

    pub fn certificate_issued(&self) {
        if let Some(r) = &self.0 {
            r.certificates.increment(1);
        }
    }

    pub fn login(&self, result: LoginResult) {
        if let Some(r) = &self.0 {
            let i = LoginResult::ALL
                .iter()
                .position(|e| *e == result)
                .unwrap_or(0);
            r.logins[i].increment(1);
        }
    }

    /// The counter for tunnel bytes going `direction` (a no-op counter when disabled).
    pub fn tunnel_bytes(&self, direction: Direction) -> Counter {
        match &self.0 {
            Some(r) => r.tunnel_bytes[direction as usize].clone(),
            None => Counter::noop(),
        }
    }

    /// One HTTP request answered; `route` is the matched route template, never a raw path.
    pub fn http_request(&self, route: &str, method: &'static str, status: u16) {
        if let Some(r) = &self.0 {
            let labels = vec![
                Label::new("route", route.to_owned()),
                Label::new("method", method),
                Label::new("status", status.to_string()),
            ];
            r.recorder
                .register_counter(&Key::from_parts(HTTP_REQUESTS, labels), &METADATA)
                .increment(1);
        }
    }

    /// The exposition text: the recorded series, then the gauges read just now.
    pub fn render(&self, gauges: &Gauges) -> String {
        let Some(r) = &self.0 else {
            return String::new();
        };
        let mut text = r.recorder.handle().render();
        gauges.write(&mut text);
        text
    }

    /// Folds histogram samples into their buckets; run now and then so that samples do not
    /// pile up between scrapes.
    pub fn upkeep(&self) {
        if let Some(r) = &self.0 {
            r.recorder.handle().run_upkeep();
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::from_static_parts(k, v))
        .collect();
    Key::from_parts(name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_family_is_exported_from_the_first_scrape_and_counts_move() {
        let metrics = Metrics::enabled();
        let gauges = Gauges {
            stored: Some(gauges::Stored::default()),
            ..Gauges::default()
        };
        let text = metrics.render(&gauges);
        let mut exported = families(&text);
        exported.sort();
        let mut expected: Vec<String> = FAMILIES
            .iter()
            .filter(|(name, _, _)| *name != HTTP_REQUESTS)
            .map(|(name, _, _)| (*name).to_owned())
            .collect();
        expected.sort();
        assert_eq!(exported, expected, "{text}");
        assert!(
            text.contains(
                "postern_sessions_ended_total{state=\"failed\",reason=\"agent_offline\"} 0"
            ),
            "{text}"
        );

        metrics.session_entered(SessionState::Running, None, 1_000, 1_750);
        metrics.session_entered(SessionState::Stopped, Some("idle timeout"), 1_000, 9_000);
        metrics.http_request("/api/v1/agents/{agent}", "GET", 200);
        metrics.tunnel_bytes(Direction::FromAgent).increment(5);
        let text = metrics.render(&gauges);
        assert!(
            text.contains("postern_session_time_to_running_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("postern_session_time_to_running_seconds_bucket{le=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("postern_session_time_to_running_seconds_bucket{le=\"0.5\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "postern_sessions_ended_total{state=\"stopped\",reason=\"idle_timeout\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("postern_session_transitions_total{state=\"running\"} 1"),
            "{text}"
        );
        assert!(text.contains("postern_http_requests_total{route=\"/api/v1/agents/{agent}\",method=\"GET\",status=\"200\"} 1"), "{text}");
        assert!(
            text.contains("postern_tunnel_bytes_total{direction=\"from_agent\"} 5"),
            "{text}"
        );
    }

    #[test]
    fn disabled_metrics_record_and_render_nothing() {
        let metrics = Metrics::default();
        metrics.link_opened();
        metrics.tunnel_bytes(Direction::ToAgent).increment(1);
        assert_eq!(metrics.render(&Gauges::default()), "");
    }
}
