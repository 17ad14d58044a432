// The login form. Says why the user is here when a login expired, and how long to wait when
// the server slows down repeated failures.

import { useState } from 'preact/hooks';
import { ApiError, describeError } from '../api/http';
import { logIn, loginNotice } from '../state/auth';

export function LoginPage() {
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    logIn(user.trim(), password)
      .catch((e: unknown) => {
        if (e instanceof ApiError && e.status === 401) setError('Wrong user name or password.');
        else if (e instanceof ApiError && e.status === 429)
          setError(`Too many failed attempts. Try again in ${e.retryAfter ?? 'a few'} seconds.`);
        else setError(describeError(e));
      })
      .finally(() => setBusy(false));
  };

  return (
    <main class="login">
      <form class="login-card card" onSubmit={submit} aria-labelledby="login-title">
        <div class="brand brand-large" aria-hidden="true">
          <span class="brand-mark">P</span> Postern
        </div>
        <h1 id="login-title">Log in</h1>
        {loginNotice.value && (
          <p class="notice warning" role="status">
            {loginNotice.value}
          </p>
        )}
        <label class="field">
          <span>User name</span>
          <input
            name="user"
            autoComplete="username"
            required
            autoFocus
            value={user}
            onInput={(e) => setUser(e.currentTarget.value)}
          />
        </label>
        <label class="field">
          <span>Password</span>
          <input
            name="password"
            type="password"
            autoComplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        {error && (
          <p class="notice error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="button primary wide" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
    </main>
  );
}
