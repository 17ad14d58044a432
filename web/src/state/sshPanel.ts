// Which SSH session the terminal panel shows. Kept in sessionStorage so that a reload brings
// the panel back and reattaches to the same shell. Hiding the panel never stops the session.

import { effect, signal } from '@preact/signals';
import { startSession } from '../api/endpoints';
import { putSession } from './sessions';

const STORAGE_KEY = 'postern.sshPanel';

export const sshPanelSession = signal<string | null>(sessionStorage.getItem(STORAGE_KEY));

effect(() => {
  const id = sshPanelSession.value;
  if (id) sessionStorage.setItem(STORAGE_KEY, id);
  else sessionStorage.removeItem(STORAGE_KEY);
});

export function showSshPanel(sessionId: string): void {
  sshPanelSession.value = sessionId;
}

export function hideSshPanel(): void {
  sshPanelSession.value = null;
}

/** Starts a session on the agent (its id, name or DID), or finds the user's open one, and shows it. */
export async function openSsh(agent: string): Promise<void> {
  const session = await startSession(agent);
  putSession(session);
  showSshPanel(session.id);
}
