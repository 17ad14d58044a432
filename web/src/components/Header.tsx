// The top bar: pages, the live-connection state, the notifications bell, who is logged in.

import type { JSX } from 'preact';
import { currentUser, isAdmin, logOut } from '../state/auth';
import { liveState } from '../state/live';
import { notificationsOpen, unreadCount } from '../state/notifications';
import { currentPage, navigate, pathOf, type Page } from '../state/router';
import { nextTheme, theme } from '../state/theme';
import { BellIcon, LogoutIcon, MoonIcon, SunIcon, SystemThemeIcon } from './Icons';

const THEME_LABELS = {
  system: 'Colour theme: as the system (choose light)',
  light: 'Colour theme: light (choose dark)',
  dark: 'Colour theme: dark (follow the system)',
};

const LIVE_LABELS = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' };

export function Header() {
  const user = currentUser.value;
  const unread = unreadCount.value;
  return (
    <header class="app-header">
      <a class="brand" href="/agents" onClick={link('agents')}>
        <span class="brand-mark" aria-hidden="true">
          P
        </span>
        <span class="brand-name">Postern</span>
      </a>
      <nav aria-label="Pages">
        <NavLink page="agents">Agents</NavLink>
        <NavLink page="sessions">Sessions</NavLink>
        {isAdmin.value && <NavLink page="admin">Admin</NavLink>}
      </nav>
      <span class="spacer" />
      <span class={`live ${liveState.value}`} role="status">
        {LIVE_LABELS[liveState.value]}
      </span>
      <button
        type="button"
        class="button icon-button"
        aria-label={THEME_LABELS[theme.value]}
        title={THEME_LABELS[theme.value]}
        onClick={nextTheme}
      >
        {theme.value === 'light' ? <SunIcon /> : theme.value === 'dark' ? <MoonIcon /> : <SystemThemeIcon />}
      </button>
      <button
        type="button"
        class="button icon-button bell"
        aria-label={unread ? `Notifications, ${unread} unread` : 'Notifications'}
        title="Notifications"
        aria-expanded={notificationsOpen.value}
        onClick={() => (notificationsOpen.value = !notificationsOpen.value)}
      >
        <BellIcon />
        {unread > 0 && (
          <span class="count" aria-hidden="true">
            {unread > 99 ? '99+' : unread}
          </span>
        )}
      </button>
      {user && (
        <span class="who">
          {user.name} <span class="muted">({user.role})</span>
        </span>
      )}
      <button
        type="button"
        class="button icon-button"
        aria-label="Log out"
        title="Log out"
        onClick={() => void logOut()}
      >
        <LogoutIcon />
      </button>
    </header>
  );
}

function link(page: Page) {
  return (event: MouseEvent) => {
    // Let modified clicks open a new tab as links do.
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(page);
  };
}

function NavLink({ page, children }: { page: Page; children: JSX.Element | string }) {
  const current = currentPage.value === page;
  return (
    <a
      href={pathOf(page)}
      class={current ? 'active' : ''}
      aria-current={current ? 'page' : undefined}
      onClick={link(page)}
    >
      {children}
    </a>
  );
}
