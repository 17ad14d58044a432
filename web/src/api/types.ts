// Every body the server sends or accepts. The HTTP API's types are generated from the
// server's OpenAPI document (schema.ts, by scripts/api-types.mjs on every build); only what
// the document does not describe is written here: the terminal WebSocket's frames, query
// shapes, and the liveness the link-liveness work adds to the agent view (until the document
// carries it). Times are unix milliseconds unless a name says otherwise.

import type * as Api from './schema';

export type {
  AgentCounts,
  AgentFacts,
  AgentStatus,
  CreatedToken,
  CreateTokenRequest,
  CreateUserRequest,
  LoginRequest,
  LoginResponse,
  Me,
  PasswordRequest,
  Role,
  SessionState,
  SessionStep,
  SessionView,
  TokenView,
  UpdateUserRequest,
  UserView,
} from './schema';

/** Every error response. */
export type ErrorBody = Api.ApiError;

export type NotificationsReadRequest = Api.NotificationsRead;

/** How an agent's link is doing: `not_responding` after missed heartbeats, still connected. */
export type Liveness = 'online' | 'not_responding' | 'offline';

/** Servers that do not track missed heartbeats send no liveness: then `online` says it all. */
export type AgentView = Api.AgentView & { liveness?: Liveness };

export type { PresenceChange, PresenceChanges } from './schema';

export type AgentDecision = 'approve' | 'reject' | 'revoke';

/** The agent an event or a session is about, named as it was then. */
export type AgentRef = Api.EventAgent;

/** The server's kinds, and `agent.not_responding` of the link-liveness work (until the
 *  document carries it). */
export type EventKind = Api.EventKind | 'agent.not_responding';

export type EventView = Omit<Api.EventView, 'kind'> & { kind: EventKind };

/** `GET /agents`: a search, filters and a page (see the server's `AgentListQuery`). */
export interface AgentsQuery {
  q?: string;
  status?: Api.AgentStatus;
  online?: boolean;
  limit?: number;
  cursor?: string | null;
}

export interface SessionsQuery {
  agent?: string;
  state?: Api.SessionState;
  user?: string;
  limit?: number;
}

/** The events that change what an agent's card shows. */
export const AGENT_EVENT_KINDS: readonly EventKind[] = [
  'agent.enrolled',
  'agent.approved',
  'agent.rejected',
  'agent.revoked',
  'agent.online',
  'agent.offline',
];

// The terminal WebSocket (/api/v1/sessions/{id}/terminal). Binary frames carry raw bytes both
// ways; text frames carry these JSON messages.

export type TerminalServerMessage =
  /** The binary output that follows starts at byte `offset`; `reset`: clear the screen first.
   * `shell`: the shell's name on the device, to re-attach to it through any server. `input`:
   * the shell's input count (bytes since its start) that this server has; on a socket's first
   * `attached`, what we typed past it is sent again. */
  | { type: 'attached'; offset: number; reset: boolean; shell?: string; input: number }
  /** Our oldest unacknowledged input frame ends at byte `end` of the shell's input. */
  | { type: 'input'; end: number }
  | { type: 'state'; state: Api.SessionState; reason?: string }
  | { type: 'exit'; status?: number; signal?: string }
  /** The device no longer has the shell (its grace ran out); a new one can be started. */
  | { type: 'gone'; reason: string }
  | { type: 'error'; message: string };

export type TerminalClientMessage = { type: 'resize'; cols: number; rows: number };
