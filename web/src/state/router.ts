// Pages are paths (/agents, /sessions, /admin); the server answers every non-API path with
// the app, so links and reloads work. The history API is all the router there is.

import { signal } from '@preact/signals';

export type Page = 'agents' | 'sessions' | 'admin' | 'terminal';

/** `terminal` is a session's terminal alone in its tab: /terminal/SESSION-ID. */
const PATHS: Record<Page, string> = { agents: '/agents', sessions: '/sessions', admin: '/admin', terminal: '/terminal/' };

function pageOf(pathname: string): Page {
  const found = (Object.keys(PATHS) as Page[]).find((page) => pathname.startsWith(PATHS[page]));
  return found ?? 'agents';
}

export const currentPage = signal<Page>(pageOf(location.pathname));

addEventListener('popstate', () => {
  currentPage.value = pageOf(location.pathname);
});

export function pathOf(page: Page): string {
  return PATHS[page];
}

export function navigate(page: Page): void {
  if (location.pathname !== PATHS[page]) history.pushState(null, '', PATHS[page]);
  currentPage.value = page;
}

/** The session a /terminal/ID page shows. */
export function terminalSessionId(): string {
  return decodeURIComponent(location.pathname.slice(PATHS.terminal.length));
}

export function terminalPath(sessionId: string): string {
  return PATHS.terminal + encodeURIComponent(sessionId);
}
