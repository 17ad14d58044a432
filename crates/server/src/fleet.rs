//! Finding agents in a large fleet: a search over name, DID, hostname and OS, filters on
//! status and connection, and pages in name order with a cursor (the last name of the page:
//! names are unique), so that a list of 10,000 agents is read a page at a time.

use postern_protocol::AgentStatus;

use crate::store::AgentRecord;

/// The most agents one page may hold: enough for a screen of cards, small enough to stay a
/// few hundred kilobytes of JSON.
pub const MAX_PAGE: usize = 1000;

#[derive(Clone, Debug, Default)]
pub struct AgentQuery {
    /// Case-insensitive: part of the name, hostname or OS, or a prefix of the DID (with or
    /// without `did:key:`).
    pub search: Option<String>,
    pub status: Option<AgentStatus>,
    pub online: Option<bool>,
    /// At most this many (capped at `MAX_PAGE`); all when absent.
    pub limit: Option<usize>,
    /// Agents after this name.
    pub after: Option<String>,
}

/// One page of agents and where the next one starts.
#[derive(Debug)]
pub struct AgentPage {
    pub agents: Vec<AgentRecord>,
    /// How many agents match, over all pages.
    pub total: usize,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

impl AgentQuery {
    fn matches(&self, agent: &AgentRecord, online: bool) -> bool {
        if self.status.is_some_and(|s| s != agent.status)
            || self.online.is_some_and(|o| o != online)
        {
            return false;
        }
        let Some(needle) = self
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return true;
        };
        let needle = needle.to_lowercase();
        let has = |text: &str| text.to_lowercase().contains(&needle);
        let did = agent.did.to_lowercase();
        has(&agent.name)
            || has(&agent.facts.hostname)
            || has(&agent.facts.os)
            || did.starts_with(&needle)
            || did
                .strip_prefix("did:key:")
                .is_some_and(|d| d.starts_with(&needle))
    }

    /// Filters `agents` (in name order, as the store lists them) and cuts the page.
    pub fn page(&self, agents: Vec<AgentRecord>, is_online: impl Fn(&str) -> bool) -> AgentPage {
        let matching: Vec<AgentRecord> = agents
            .into_iter()
            .filter(|a| self.matches(a, is_online(&a.id)))
            .collect();
        let total = matching.len();
        let start = self.after.as_deref().map_or(0, |after| {
            matching.partition_point(|a| a.name.as_str() <= after)
        });
        let limit = self.limit.map_or(usize::MAX, |l| l.clamp(1, MAX_PAGE));
        let agents: Vec<AgentRecord> = matching.into_iter().skip(start).take(limit).collect();
        let next = (start + agents.len() < total)
            .then(|| agents.last().map(|a| a.name.clone()))
            .flatten();
        AgentPage {
            agents,
            total,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use postern_protocol::AgentFacts;

    use super::*;

    fn agent(name: &str, status: AgentStatus, os: &str) -> AgentRecord {
        AgentRecord {
            id: format!("id-{name}"),
            did: format!("did:key:z6Mk{name}"),
            name: name.into(),
            ssh_public_key: String::new(),
            status,
            facts: AgentFacts {
                hostname: format!("host-{name}"),
                os: os.into(),
                ..AgentFacts::default()
            },
            enrolled_at: 0,
            last_seen: None,
            remote_addr: None,
        }
    }

    fn fleet() -> Vec<AgentRecord> {
        (0..25)
            .map(|i| {
                let status = if i % 5 == 0 {
                    AgentStatus::Pending
                } else {
                    AgentStatus::Approved
                };
                agent(
                    &format!("edge-{i:02}"),
                    status,
                    if i < 10 { "Debian 12" } else { "Alpine" },
                )
            })
            .collect()
    }

    fn names(page: &AgentPage) -> Vec<&str> {
        page.agents.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn pages_follow_the_cursor_to_the_end() {
        let mut query = AgentQuery {
            limit: Some(10),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = query.page(fleet(), |_| true);
            assert_eq!(page.total, 25);
            seen.extend(names(&page).into_iter().map(str::to_owned));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn search_covers_name_hostname_os_and_did_prefix() {
        let search = |s: &str| {
            AgentQuery {
                search: Some(s.into()),
                ..Default::default()
            }
            .page(fleet(), |_| true)
        };
        assert_eq!(names(&search("EDGE-03")), ["edge-03"]);
        assert_eq!(names(&search("host-edge-04")), ["edge-04"]);
        assert_eq!(search("alpine").total, 15);
        assert_eq!(names(&search("z6Mkedge-07")), ["edge-07"]);
        assert_eq!(names(&search("did:key:z6Mkedge-08")), ["edge-08"]);
        // The DID matches by prefix only: its middle is noise.
        assert_eq!(search("kedge-0").total, 0);
    }

    #[test]
    fn status_and_connection_filter() {
        let online = |id: &str| id.ends_with('1');
        let page = AgentQuery {
            status: Some(AgentStatus::Pending),
            ..Default::default()
        }
        .page(fleet(), online);
        assert_eq!(page.total, 5);
        let page = AgentQuery {
            online: Some(true),
            ..Default::default()
        }
        .page(fleet(), online);
        assert_eq!(names(&page), ["edge-01", "edge-11", "edge-21"]);
        let page = AgentQuery {
            online: Some(false),
            limit: Some(0),
            ..Default::default()
        }
        .page(fleet(), online);
        assert_eq!(
            (page.total, page.agents.len()),
            (22, 1),
            "a limit of 0 still returns one"
        );
    }
}
