// The app's frame: the login page until someone is logged in, then the header, the current
// page, the SSH panel and the notifications sidebar. Live updates run while logged in.

import { useEffect } from 'preact/hooks';
import { Header } from './components/Header';
import { NotificationsSidebar } from './components/NotificationsSidebar';
import { SshPanel } from './components/SshPanel';
import { AdminPage } from './pages/AdminPage';
import { AgentsPage } from './pages/AgentsPage';
import { LoginPage } from './pages/LoginPage';
import { SessionsPage } from './pages/SessionsPage';
import { TerminalPage } from './pages/TerminalPage';
import { authReady, currentUser } from './state/auth';
import { startLiveUpdates } from './state/live';
import { currentPage } from './state/router';

export function App() {
  const user = currentUser.value;
  // Keyed on who is logged in, not on the object: a fresh /me must not restart everything.
  const login = user ? `${user.name}/${user.role}` : null;
  useEffect(() => (user ? startLiveUpdates(user) : undefined), [login]);

  if (!authReady.value) return <p class="boot muted">Loading…</p>;
  if (!user) return <LoginPage />;
  return (
    <div class="app">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <Header />
      <main id="main" class="app-main" tabIndex={-1}>
        <CurrentPage />
      </main>
      <SshPanel />
      <NotificationsSidebar />
    </div>
  );
}

function CurrentPage() {
  switch (currentPage.value) {
    case 'agents':
      return <AgentsPage />;
    case 'sessions':
      return <SessionsPage />;
    case 'admin':
      return <AdminPage />;
    case 'terminal':
      return <TerminalPage />;
  }
}
