// Every body the server sends or accepts, as the server defines it (crates/protocol/src/api.rs
// and the terminal WebSocket). Times are unix milliseconds unless a name says otherwise.

export type Role = 'admin' | 'operator' | 'viewer';

export type AgentStatus = 'pending' | 'approved' | 'rejected' | 'revoked';

/** How an agent's link is doing: `not_responding` after missed heartbeats, still connected. */
export type Liveness = 'online' | 'not_responding' | 'offline';

export type SessionState = 'requested' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

/** Every error response. */
export interface ErrorBody {
  error: string;
  message: string;
}

export interface LoginRequest {
  user: string;
  password: string;
}

export interface LoginResponse {
  token: string;
  expires_at: number;
  user: { name: string; role: Role };
}

export interface Me {
  name: string;
  role: Role;
  /** The last event id this user marked as read; 0 when none. */
  notifications_read_up_to: number;
}

export interface NotificationsReadRequest {
  read_up_to: number;
}

export interface AgentFacts {
  hostname: string;
  os: string;
  kernel: string;
  arch: string;
  cpus: number;
  memory_bytes: number;
  agent_version: string;
  /** Logins the agent's SSH server accepts; the first is the default. */
  logins: string[];
}

export interface AgentView {
  id: string;
  name: string;
  did: string;
  status: AgentStatus;
  online: boolean;
  /** Absent from servers that do not track missed heartbeats: then `online` says it all. */
  liveness?: Liveness;
  last_seen: number | null;
  facts: AgentFacts;
  enrolled_at: number;
  ssh_public_key: string;
  /** Only administrators see it. */
  remote_addr?: string;
}

/** One agent's presence in a presence answer. */
export interface PresenceChange {
  id: string;
  online: boolean;
  liveness?: Liveness;
  last_seen: number;
}

/** `GET /presence/changes?since=cursor`. */
export interface PresenceChanges {
  cursor: string;
  /** True: every online agent is listed and every other one is offline; false: only changes. */
  full: boolean;
  agents: PresenceChange[];
}

export type AgentDecision = 'approve' | 'reject' | 'revoke';

/** The agent an event or a session is about, named as it was then. */
export interface AgentRef {
  id: string;
  name: string;
  did: string;
}

export interface SessionStep {
  state: SessionState;
  reason?: string;
  time: number;
}

export interface SessionView {
  id: string;
  agent: AgentRef;
  user: string;
  state: SessionState;
  port?: number;
  reason?: string;
  created_at: number;
  updated_at: number;
  ended_at?: number;
  /** Every state so far, oldest first; only in single-session responses. */
  history?: SessionStep[];
}

export interface SessionsQuery {
  agent?: string;
  state?: SessionState;
  user?: string;
  limit?: number;
}

export type EventKind =
  | 'agent.enrolled'
  | 'agent.approved'
  | 'agent.rejected'
  | 'agent.revoked'
  | 'agent.online'
  | 'agent.offline'
  | 'agent.not_responding'
  | 'user.login'
  | 'user.login_failed'
  | 'user.logout'
  | 'user.created'
  | 'user.updated'
  | 'user.deleted'
  | 'token.created'
  | 'token.revoked'
  | 'session.state'
  | 'certificate.issued';

/** The events that change what an agent's card shows. */
export const AGENT_EVENT_KINDS: readonly EventKind[] = [
  'agent.enrolled',
  'agent.approved',
  'agent.rejected',
  'agent.revoked',
  'agent.online',
  'agent.offline',
  'agent.not_responding',
];

export interface EventView {
  id: number;
  time: number;
  kind: EventKind;
  /** A user name, or "system". */
  actor: string;
  agent?: AgentRef;
  session?: { id: string; state: SessionState };
  detail: string;
}

export interface UserView {
  name: string;
  role: Role;
  created_at: number;
}

export interface CreateUserRequest {
  name: string;
  role: Role;
  password: string;
}

export interface UpdateUserRequest {
  role: Role;
}

export interface PasswordRequest {
  password: string;
}

export interface TokenView {
  id: string;
  created_by: string;
  created_at: number;
  expires_at: number;
  max_uses: number;
  uses: number;
  revoked: boolean;
}

export interface CreateTokenRequest {
  ttl_secs?: number;
  uses?: number;
}

/** The secret `token` is shown only in this response. */
export interface CreatedToken extends TokenView {
  token: string;
}

// The terminal WebSocket (/api/v1/sessions/{id}/terminal). Binary frames carry raw bytes both
// ways; text frames carry these JSON messages.

export type TerminalServerMessage =
  /** The binary output that follows starts at byte `offset`; `reset`: clear the screen first. */
  | { type: 'attached'; offset: number; reset: boolean }
  | { type: 'state'; state: SessionState; reason?: string }
  | { type: 'exit'; status?: number; signal?: string }
  | { type: 'error'; message: string };

export type TerminalClientMessage = { type: 'resize'; cols: number; rows: number };
