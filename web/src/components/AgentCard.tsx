// One agent: who it is, whether it is online, its device, the user's SSH session on it, and
// what the user may do with it. Re-renders only when this agent or that session changes; the
// "last seen" text follows the shared clock without re-rendering the card.

import { useComputed, type Signal } from '@preact/signals';
import { useState } from 'preact/hooks';
import { decideAgent } from '../api/endpoints';
import { describeError } from '../api/http';
import type { AgentDecision, AgentStatus, AgentView, Liveness } from '../api/types';
import { ago, bytes, shortDid } from '../format';
import { putAgent } from '../state/agents';
import { livenessOf } from '../state/fleet';
import { canOpenSsh, isAdmin } from '../state/auth';
import { now } from '../state/clock';
import { myOpenSessionByAgent } from '../state/sessions';
import { openSsh, showSshPanel } from '../state/sshPanel';
import { ConfirmButton } from './ConfirmButton';
import { CopyButton } from './CopyButton';
import { TerminalIcon } from './Icons';
import { AgentStatusBadge, SessionStateBadge } from './StatusBadge';

/** What an administrator may decide from each status (revocation is final). */
const DECISIONS: Record<AgentStatus, AgentDecision[]> = {
  pending: ['approve', 'reject', 'revoke'],
  rejected: ['approve', 'revoke'],
  approved: ['revoke'],
  revoked: [],
};

const LIVENESS_LABEL: Record<Liveness, string> = {
  online: 'Online',
  not_responding: 'Not responding',
  offline: 'Offline',
};

export function AgentCard({ agent: agentSignal }: { agent: Signal<AgentView> }) {
  const agent = agentSignal.value;
  const mySession = useComputed(() => myOpenSessionByAgent.value.get(agentSignal.value.id)).value;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const headingId = `agent-${agent.id}`;

  const act = (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    action()
      .catch((e: unknown) => setError(describeError(e)))
      .finally(() => setBusy(false));
  };
  const decide = (decision: AgentDecision) => act(async () => putAgent(await decideAgent(agent.id, decision)));
  // Approved agents always show the SSH icon; offline, it stays (disabled) and says why.
  const sshShown = canOpenSsh.value && agent.status === 'approved';
  const sshReady = sshShown && agent.online;
  const liveness = livenessOf(agent);
  const sshNoteId = `ssh-note-${agent.id}`;

  return (
    <article class={`agent-card is-${liveness.replace('_', '-')}`} aria-labelledby={headingId} data-liveness={liveness}>
      <header class="agent-card-header">
        <span class="presence-dot" aria-hidden="true" />
        <h2 id={headingId} class="agent-name" title={agent.name}>
          {agent.name}
        </h2>
        <AgentStatusBadge status={agent.status} />
        {sshShown && (
          <button
            type="button"
            class="button icon-button ssh-button"
            aria-label={`Open SSH connection to ${agent.name}`}
            title={sshReady ? `Open SSH connection to ${agent.name}` : `SSH needs ${agent.name} online`}
            // aria-disabled, not disabled: it stays focusable, and its note is read with it.
            aria-disabled={!sshReady || busy}
            aria-describedby={sshReady ? undefined : sshNoteId}
            onClick={() => sshReady && !busy && act(() => openSsh(agent.id))}
          >
            <TerminalIcon />
          </button>
        )}
      </header>

      <div class="agent-did">
        <code title={agent.did}>{shortDid(agent.did)}</code>
        <CopyButton text={agent.did} label={`Copy DID of ${agent.name}`} />
      </div>

      <p class="agent-presence">
        <strong>{LIVENESS_LABEL[liveness]}</strong>
        {/* Online means heard from within the last heartbeats: a "last seen" adds nothing; the
            SSH note below says it for offline agents that could take SSH. */}
        {liveness === 'online' || (sshShown && !agent.online) ? null : agent.last_seen == null ? (
          ' · never connected'
        ) : (
          <>
            {' · last seen '}
            <LastSeen agent={agentSignal} />
          </>
        )}
      </p>

      {sshShown && !agent.online && (
        <div class="ssh-note" id={sshNoteId}>
          <p>
            <strong>SSH needs {agent.name} online</strong>
            {agent.last_seen == null ? (
              ' · never connected'
            ) : (
              <>
                {' · last seen '}
                <LastSeen agent={agentSignal} />
              </>
            )}
          </p>
          <p>Check that the device is on, its Postern agent is running, and its network can reach this server.</p>
        </div>
      )}
      {sshShown && liveness === 'not_responding' && (
        <p class="ssh-note warning">
          {agent.name} is connected but missed its last heartbeats: SSH may not start until it answers again.
        </p>
      )}

      <dl class="agent-facts">
        <Fact term="Hostname" value={agent.facts.hostname} />
        <Fact term="OS" value={agent.facts.os} />
        <Fact term="Arch" value={agent.facts.arch + (agent.facts.cpus ? ` · ${agent.facts.cpus} CPU` : '')} />
        <Fact term="Memory" value={agent.facts.memory_bytes ? bytes(agent.facts.memory_bytes) : ''} />
        <Fact term="Agent" value={agent.facts.agent_version} />
      </dl>

      {mySession && (
        <button
          type="button"
          class="agent-session"
          aria-label={`Your SSH session ${mySession.state} on ${agent.name}, show it`}
          onClick={() => showSshPanel(mySession.id)}
        >
          <span>Your SSH session</span>{' '}
          <SessionStateBadge state={mySession.state} />
        </button>
      )}

      {isAdmin.value && DECISIONS[agent.status].length > 0 && (
        <div class="agent-actions">
          {DECISIONS[agent.status].map((decision) =>
            decision === 'revoke' ? (
              <ConfirmButton
                key={decision}
                label="Revoke"
                question={`Revoke ${agent.name}? This cannot be undone.`}
                disabled={busy}
                onConfirm={() => decide('revoke')}
              />
            ) : (
              <button
                key={decision}
                type="button"
                class={`button ${decision === 'approve' ? 'primary' : ''}`}
                disabled={busy}
                onClick={() => decide(decision)}
              >
                {decision === 'approve' ? 'Approve' : 'Reject'}
              </button>
            ),
          )}
        </div>
      )}

      {error && (
        <p class="notice error" role="alert">
          {error}
        </p>
      )}
    </article>
  );
}

function Fact({ term, value }: { term: string; value: string }) {
  return (
    <div class="fact">
      <dt>{term}</dt>
      <dd title={value}>{value || '—'}</dd>
    </div>
  );
}

/** "12 s ago", rewritten each second straight into its text node. */
function LastSeen({ agent }: { agent: Signal<AgentView> }) {
  const text = useComputed(() => {
    const seen = agent.value.last_seen;
    return seen == null ? '' : ago(seen, now.value);
  });
  return <span class="last-seen">{text}</span>;
}
