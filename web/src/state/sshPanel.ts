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

/** What had focus when the panel was asked for: focus goes back there when it closes. */
let opener: HTMLElement | null = null;

function rememberOpener() {
  const active = document.activeElement;
  if (active instanceof HTMLElement && active !== document.body && !active.closest('.ssh-panel')) opener = active;
}

/** Gives focus back to what opened the panel, or to the page if that is gone. */
export function restoreFocusAfterPanel(): void {
  const back = opener;
  opener = null;
  // After the panel has left the DOM (this runs while it unmounts).
  setTimeout(() => {
    const target = back?.isConnected ? back : document.getElementById('main');
    target?.focus();
  }, 0);
}

export function showSshPanel(sessionId: string): void {
  rememberOpener();
  sshPanelSession.value = sessionId;
}

export function hideSshPanel(): void {
  sshPanelSession.value = null;
}

/** Starts a session on the agent (its id, name or DID), or finds the user's open one, and shows it. */
export async function openSsh(agent: string): Promise<void> {
  // Now, before the wait: by the time the session answers, focus may have moved.
  rememberOpener();
  const session = await startSession(agent);
  putSession(session);
  showSshPanel(session.id);
}
