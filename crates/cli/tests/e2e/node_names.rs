//! One name for several nodes (issue 12, "a name with several DNS records is tried in random
//! order"): agents given one host name that resolves to two nodes spread over both, and when
//! one node goes, its agents link to the other by the same name.
//!
//! The name lives in a hosts file of the agents' own: `postern-bench agents` runs in a mount
//! namespace of its own (`unshare --mount`) where that file is bind-mounted over /etc/hosts,
//! so the system resolver (glibc, which returns every matching line) is the one the agent
//! uses in service. The nodes listen on 127.0.0.2 and 127.0.0.3 (both loopback on Linux), on
//! the same port, as two machines behind one name would.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;

use crate::cluster::Cluster;
use crate::harness::{established_on, eventually, free_port};
use crate::node_kill::bench_binary;
use crate::nodes::listed;

const NAME: &str = "nodes.postern.test";
const AGENTS: usize = 16;
const ADDRESSES: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_given_one_name_for_two_nodes_use_both_and_move_when_one_goes() {
    let port = free_port();
    let mut cluster = Cluster::start_with(2, |i, config| {
        config.agent_listen = (ADDRESSES[i], port).into();
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1 localhost\n{} {NAME}\n{} {NAME}\n",
            ADDRESSES[0], ADDRESSES[1]
        ),
    )
    .unwrap();
    let token = cluster.nodes[0].create_token(600, AGENTS as u32).await;
    let log = std::fs::File::create(dir.path().join("agents.log")).unwrap();
    let _agents = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
        .arg(&hosts)
        .arg(bench_binary())
        .arg("agents")
        .args(["--server", &format!("{NAME}:{port}")])
        .args(["--count", &AGENTS.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("agents"))
        .env("POSTERN_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("unshare (util-linux) runs the agents with a hosts file of their own");

    let everyone: BTreeSet<String> = (0..AGENTS).map(|i| format!("load-{i:05}")).collect();
    eventually("every agent online, linked by the one name", || async {
        (listed(&cluster.nodes[1], true).await == everyone).then_some(())
    })
    .await;
    // Each agent shuffles what the name resolves to: with 16 agents, all on one node would
    // happen once in 32,768 runs.
    let links = eventually("the links on the two addresses", || async {
        let links = ADDRESSES.map(|ip| established_on(port, Some(ip)));
        (links.iter().sum::<usize>() == AGENTS).then_some(links)
    })
    .await;
    assert!(
        links.iter().all(|n| *n > 0),
        "the agents dialled only one of the name's addresses: {links:?}"
    );

    // The first node goes: its agents dial the name again and find the other.
    cluster.nodes[0].stop().await;
    eventually("every agent linked to the remaining node", || async {
        (established_on(port, Some(ADDRESSES[1])) == AGENTS).then_some(())
    })
    .await;
    eventually("every agent online on the remaining node", || async {
        (listed(&cluster.nodes[1], true).await == everyone).then_some(())
    })
    .await;
}
