// Coloured badges for an agent's status and a session's state (colour is never the only cue:
// the word is always there).

import type { AgentStatus, SessionState } from '../api/types';

export function AgentStatusBadge({ status }: { status: AgentStatus }) {
  return <span class={`badge badge-${status}`}>{status}</span>;
}

export function SessionStateBadge({ state }: { state: SessionState }) {
  return <span class={`badge badge-${state}`}>{state}</span>;
}
