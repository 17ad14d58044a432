// One typed function per endpoint of /api/v1 that the app uses.

import { request, segment } from './http';
import type {
  AgentCounts,
  AgentDecision,
  AgentsQuery,
  AgentView,
  CreatedToken,
  CreateTokenRequest,
  CreateUserRequest,
  LoginRequest,
  LoginResponse,
  Me,
  NotificationsReadRequest,
  PasswordRequest,
  PresenceChanges,
  Role,
  SessionsQuery,
  SessionView,
  TokenView,
  UpdateUserRequest,
  UserView,
} from './types';

// Login

export const login = (user: string, password: string) =>
  request<LoginResponse>('POST', '/login', {
    body: { user, password } satisfies LoginRequest,
    unauthorizedIsAnswer: true,
  });

export const logout = () => request<void>('POST', '/logout');

export const getMe = () => request<Me>('GET', '/me');

export const markNotificationsRead = (readUpTo: number) =>
  request<void>('PUT', '/me/notifications', { body: { read_up_to: readUpTo } satisfies NotificationsReadRequest });

// Agents ({agent} is a name, DID, id or unique prefix)

/** One page of agents matching a search and filters, in name order. */
export interface AgentsPage {
  agents: AgentView[];
  /** How many agents match, over all pages. */
  total: number;
  /** The cursor of the next page; null on the last. */
  next: string | null;
}

export async function listAgents(query: AgentsQuery = {}): Promise<AgentsPage> {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, String(value));
  }
  let total: number | null = null;
  let next: string | null = null;
  const agents = await request<AgentView[]>('GET', `/agents${params.size ? `?${params}` : ''}`, {
    onHeaders(headers) {
      const count = Number(headers.get('x-total-count'));
      total = Number.isFinite(count) ? count : null;
      next = headers.get('x-next-cursor');
    },
  });
  return { agents, total: total ?? agents.length, next };
}

export const getAgentCounts = () => request<AgentCounts>('GET', '/fleet/counts');

/** What changed since `cursor` (everything online, without one). */
export const getPresenceChanges = (cursor: string | null) =>
  request<PresenceChanges>('GET', `/presence/changes${cursor ? `?since=${encodeURIComponent(cursor)}` : ''}`);

export const getAgent = (agent: string) => request<AgentView>('GET', `/agents/${segment(agent)}`);

export const decideAgent = (agent: string, decision: AgentDecision) =>
  request<AgentView>('POST', `/agents/${segment(agent)}/${decision}`);

// Sessions

/** Starts a session, or returns the caller's open one on that agent. */
export const startSession = (agent: string) => request<SessionView>('POST', `/agents/${segment(agent)}/sessions`);

export function listSessions(query: SessionsQuery = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== '') params.set(key, String(value));
  }
  const search = params.size ? `?${params}` : '';
  return request<SessionView[]>('GET', `/sessions${search}`);
}

/** With `history`. */
export const getSession = (id: string) => request<SessionView>('GET', `/sessions/${segment(id)}`);

export const stopSession = (id: string) => request<SessionView>('POST', `/sessions/${segment(id)}/stop`);

// Users (admin)

export const listUsers = () => request<UserView[]>('GET', '/users');

export const createUser = (user: CreateUserRequest) => request<UserView>('POST', '/users', { body: user });

export const changeUserRole = (name: string, role: Role) =>
  request<UserView>('PATCH', `/users/${segment(name)}`, { body: { role } satisfies UpdateUserRequest });

export const setUserPassword = (name: string, password: string) =>
  request<void>('POST', `/users/${segment(name)}/password`, { body: { password } satisfies PasswordRequest });

export const deleteUser = (name: string) => request<void>('DELETE', `/users/${segment(name)}`);

// Enrollment tokens (admin)

export const listTokens = () => request<TokenView[]>('GET', '/tokens');

export const createToken = (options: CreateTokenRequest) => request<CreatedToken>('POST', '/tokens', { body: options });

export const revokeToken = (id: string) => request<TokenView>('DELETE', `/tokens/${segment(id)}`);
