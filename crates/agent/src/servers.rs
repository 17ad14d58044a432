//! The server nodes an agent may dial, and the order it tries them in.
//!
//! Several nodes share one database, so any of them will do. `--server` takes several
//! addresses (the flag repeated, or a comma-separated list in a variable or the config file),
//! and a name may resolve to several addresses (one DNS record per node). Every attempt
//! tries the configured entries in random order, and each entry's addresses in random order,
//! until one answers: agents spread over the nodes, and the agents of a node that went away
//! do not all pile onto the same survivor. Reconnection delays stay with the supervisor's
//! backoff (exponential, full jitter): one failed round of every address is one failure.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::net::TcpStream;

use crate::cli::parse_server;

/// The gateway addresses (`HOST:PORT`) given to the agent, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerList(Vec<String>);

impl ServerList {
    pub fn new(servers: Vec<String>) -> Self {
        Self(servers)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }

    /// Every entry must be `HOST:PORT`; at least one.
    pub fn check(servers: &[String]) -> Result<(), String> {
        if servers.is_empty() {
            return Err("no server address given".into());
        }
        for server in servers {
            parse_server(server).map_err(|e| format!("{server:?}: {e}"))?;
        }
        Ok(())
    }
}

impl fmt::Display for ServerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// A comma-separated string (a variable, a one-entry config file of before) or a list.
impl<'de> Deserialize<'de> for ServerList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let entries = match Form::deserialize(deserializer)? {
            Form::One(text) => vec![text],
            Form::Many(list) => list,
        };
        Ok(Self(
            entries
                .iter()
                .flat_map(|e| e.split(','))
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

/// One entry prints as a string (what config files of one server always held), several as a
/// list.
impl Serialize for ServerList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

/// A uniformly random permutation (Fisher–Yates). Without randomness the order stays as
/// given: less spread, never wrong.
pub fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            return;
        }
        let j = (u64::from_le_bytes(bytes) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// How long one address may take to accept a TCP connection before the next is tried: a
/// node that is down but whose host drops packets must not hold up the others for the
/// whole connect timeout.
pub const PER_ADDRESS: Duration = Duration::from_secs(5);

/// Connects to the first address that answers, trying the entries and each one's DNS
/// records in random order. Returns the stream and the address it reached, or every
/// failure, one per line.
pub async fn connect(
    servers: &[String],
    per_address: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    let mut entries: Vec<&String> = servers.iter().collect();
    shuffle(&mut entries);
    let mut failures = Vec::new();
    for entry in entries {
        let mut addresses: Vec<SocketAddr> = match tokio::net::lookup_host(entry.as_str()).await {
            Ok(found) => found.collect(),
            Err(e) => {
                failures.push(format!("{entry}: {e}"));
                continue;
            }
        };
        shuffle(&mut addresses);
        for address in addresses {
            match tokio::time::timeout(per_address, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => return Ok((stream, address)),
                Ok(Err(e)) => failures.push(format!("{entry} ({address}): {e}")),
                Err(_) => failures.push(format!(
                    "{entry} ({address}): no answer within {} s",
                    per_address.as_secs()
                )),
            }
        }
    }
    Err(failures.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_a_comma_list_or_a_list_reads_as_the_same_servers() {
        #[derive(Deserialize)]
        struct File {
            server: ServerList,
        }
        let read = |text: &str| {
            serde_json::from_str::<File>(text)
                .unwrap()
                .server
                .into_vec()
        };
        let both = vec!["a:2200".to_owned(), "b:2200".to_owned()];
        assert_eq!(read(r#"{"server": "a:2200"}"#), ["a:2200"]);
        assert_eq!(read(r#"{"server": "a:2200, b:2200"}"#), both);
        assert_eq!(read(r#"{"server": ["a:2200", "b:2200"]}"#), both);
        assert!(ServerList::check(&[]).is_err());
        assert!(
            ServerList::check(&["a:2200".into(), "b".into()])
                .unwrap_err()
                .contains("\"b\"")
        );
    }

    #[test]
    fn shuffling_reaches_every_order() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut items = [1, 2, 3];
            shuffle(&mut items);
            seen.insert(items);
        }
        assert_eq!(seen.len(), 6);
    }

    #[tokio::test]
    async fn a_dead_address_is_skipped_for_one_that_answers() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let servers = [
            dead_addr.to_string(),
            live.local_addr().unwrap().to_string(),
        ];
        for _ in 0..10 {
            let (_, reached) = connect(&servers, PER_ADDRESS).await.unwrap();
            assert_eq!(reached, live.local_addr().unwrap());
        }
        let err = connect(&servers[..1], PER_ADDRESS).await.unwrap_err();
        assert!(err.contains(&dead_addr.to_string()), "{err}");
    }
}
