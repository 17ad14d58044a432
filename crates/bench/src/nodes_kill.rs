//! The kill phase of the nodes figure: `kill -9` the node that holds the pinned agents and
//! a third of the others, then watch both sides until the survivors tell the truth.
//!
//! - **Back online**: from the kill until (a) every `load-*` agent that lost its link has a
//!   new one (the load process says so, from each agent's link state) and (b) every survivor's
//!   API lists all `load-*` agents online. (a) matters: just after the kill the survivors may
//!   still list the dead node's agents from its last word, which is not "back".
//! - **Phantoms**: `pinned-*` agents know only the dead node, so none can be online anywhere;
//!   each survivor's API must come to list none of them. The figure is how many are still
//!   listed when the bench stops watching (0 once the survivors have judged the node dead),
//!   and the JSON has when that happened.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::agents::WAVE_LIMIT;
use crate::load::now_us;
use crate::load_child::{Load, LoadEvent};
use crate::nodes::{NODES, Node, NodesPlan, VICTIM};
use crate::procfs;
use crate::report::{Bound, Figure};
use crate::stats;

/// The server's default `node_dead_after`: when the survivors may judge the dead node dead.
const NODE_DEAD_AFTER: Duration = Duration::from_secs(15);

/// What the survivors' API said at one poll.
struct Poll {
    load_online: Vec<u64>,
    pinned_online: Vec<u64>,
}

async fn poll(survivors: &[&Node]) -> Result<Poll> {
    let mut p = Poll {
        load_online: Vec::new(),
        pinned_online: Vec::new(),
    };
    for node in survivors {
        p.load_online
            .push(node.api.agents_total("online=true&q=load-").await?);
        p.pinned_online
            .push(node.api.agents_total("online=true&q=pinned-").await?);
    }
    Ok(p)
}

pub async fn measure(
    nodes: &mut [Node],
    load: &mut Load,
    pins: &mut Load,
    plan: &NodesPlan,
) -> Result<Vec<Figure>> {
    let (n, pinned) = (load.count(), pins.count());
    let victim_links = procfs::established_on_port(nodes[VICTIM].port())?;
    // Every pinned agent is on the victim; the rest of its links are load agents.
    let victim_load = victim_links.saturating_sub(pinned);
    let _ = (load.drain(), pins.drain());
    eprintln!(
        "  kill -9 node {VICTIM}: {victim_load} agents of all nodes and {pinned} pinned on it"
    );
    let kill_us = now_us();
    let killed_at = Instant::now();
    nodes[VICTIM].server.proc.kill().await?;
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| (i != VICTIM).then_some(node))
        .collect();

    let mut went_down: HashSet<usize> = HashSet::new();
    let mut back: HashMap<usize, u64> = HashMap::new();
    let (mut back_after, mut truthful_after) = (None, None);
    let last = loop {
        for event in load.drain() {
            match event {
                LoadEvent::Down { i, t_us } if t_us >= kill_us => {
                    went_down.insert(i);
                    back.remove(&i);
                }
                LoadEvent::Up { i, t_us } if t_us >= kill_us => {
                    back.insert(i, t_us);
                }
                _ => {}
            }
        }
        let _ = pins.drain();
        let at = killed_at.elapsed().as_secs_f64();
        let seen = poll(&survivors).await?;
        let links_back = went_down.len() >= victim_load
            && went_down.iter().all(|i| load.is_up(*i))
            && load.up == n;
        if back_after.is_none() && links_back && seen.load_online.iter().all(|c| *c == n as u64) {
            back_after = Some(at);
            eprintln!("  the survivors list all {n} online {at:.2} s after the kill");
        }
        if truthful_after.is_none() && seen.pinned_online.iter().all(|c| *c == 0) {
            truthful_after = Some(at);
            eprintln!("  the survivors list none of the pinned agents {at:.2} s after the kill");
        }
        if (back_after.is_some() && truthful_after.is_some()) || killed_at.elapsed() > WAVE_LIMIT {
            break seen;
        }
        // The API's counts are what is waited on; this only paces the asking.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let reconnect: Vec<f64> = back
        .values()
        .map(|t| t.saturating_sub(kill_us) as f64 / 1e6)
        .collect();
    let reconnect_summary = stats::summarize(&reconnect);
    let peak = stats::peak_in_window(&reconnect, 1.0);
    let survivor_links: Vec<usize> = survivors
        .iter()
        .map(|node| procfs::established_on_port(node.port()))
        .collect::<Result<_>>()?;
    let phantoms = last.pinned_online.iter().copied().max().unwrap_or(0);

    let mut back_figure = Figure::new(
        "nodes.kill_back_online",
        format!("{NODES} nodes: kill -9 one, its agents online on the others"),
        "s",
    );
    if let Some(at) = back_after {
        back_figure = back_figure.postern(at);
    }
    let figures = vec![
        back_figure
            .details(json!({
                "from": "the kill -9 (SIGKILL to the node's process)",
                "until": "every agent that lost its link has a new one and every survivor's API lists all agents online",
                "agents_on_the_killed_node": victim_load,
                "agents_that_lost_their_link": went_down.len(),
                "reconnected_per_agent_s": reconnect_summary,
                "peak_reconnections_per_second": peak,
                "survivors_links_after": survivor_links,
                "survivors_list_online_at_the_end": last.load_online,
                "gave_up_after_s": back_after.is_none().then_some(WAVE_LIMIT.as_secs()),
                "one_node_restart_same_run_s": plan.one_node["restart_back_online_s"],
            }))
            .judged(),
        Figure::new(
            "nodes.kill_phantom_online",
            format!("{NODES} nodes: agents of the killed node still shown online"),
            "agents",
        )
        .postern(phantoms as f64)
        .bound(Bound::AtMost(0.0))
        .details(json!({
            "pinned_agents": pinned,
            "how": "agents given only the killed node's address cannot be online anywhere; the survivors' API (GET /agents?online=true) must list none of them",
            "listed_by_each_survivor_at_the_end": last.pinned_online,
            "none_listed_after_s": truthful_after,
            "server_node_dead_after_s": NODE_DEAD_AFTER.as_secs(),
        }))
        .judged(),
    ];
    Ok(figures)
}
