//! The server's word on this agent (pending, approved, rejected, revoked): saved, logged, and
//! applied to its sessions.

use postern_protocol::AgentStatus;
use postern_protocol::control::StatusUpdate;

use super::conversation::LinkContext;

/// Records and reports the server's word. Returns true when the agent is revoked.
pub(super) fn apply_status(lc: &LinkContext<'_>, update: StatusUpdate) -> bool {
    let ctx = lc.ctx;
    if let Err(e) = ctx.state.save_status(&update) {
        tracing::error!(error = %e, "could not save the agent's status");
    }
    lc.forwarding.set_target(ctx.session_target(&update));
    let did = ctx.identity.did.as_str();
    let note = update.message.as_deref().unwrap_or("");
    match update.status {
        AgentStatus::Pending => {
            tracing::info!(did, name = %update.name, "{}", join("waiting for approval", note))
        }
        AgentStatus::Approved => tracing::info!(did, name = %update.name, "approved; link up"),
        AgentStatus::Rejected => tracing::warn!(
            did, name = %update.name,
            "rejected by an administrator; waiting in case the decision changes"
        ),
        AgentStatus::Revoked => tracing::error!(did, name = %update.name, "this agent was revoked"),
    }
    let revoked = update.status == AgentStatus::Revoked;
    if update.status != AgentStatus::Approved {
        lc.forwarding.stop_all();
        ctx.shells.forget_all();
        let processes = ctx.processes.clone();
        tokio::spawn(async move { processes.end_all().await });
    }
    lc.state.send_modify(|s| {
        s.status = Some(update.status);
        s.name = Some(update.name.clone());
        s.message = update.message.clone();
    });
    revoked
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a} ({b})")
    }
}
