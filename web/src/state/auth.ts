// Who is logged in. The login itself is an HttpOnly cookie the app never sees; the app only
// remembers *that* it logged in, so that a first visit shows the login page without asking
// the server (and collecting a 401) first.

import { computed, signal } from '@preact/signals';
import { getMe, login, logout } from '../api/endpoints';
import { setUnauthorizedHandler } from '../api/http';
import type { Me } from '../api/types';

const LOGGED_IN_HINT = 'postern.loggedIn';

export const currentUser = signal<Me | null>(null);
/** False until the app knows whether a login is in place. */
export const authReady = signal(false);
/** Shown on the login page: why the user is there. */
export const loginNotice = signal<string | null>(null);

export const isAdmin = computed(() => currentUser.value?.role === 'admin');
/** Operators and admins open SSH sessions; viewers only look. */
export const canOpenSsh = computed(() => {
  const role = currentUser.value?.role;
  return role === 'admin' || role === 'operator';
});

setUnauthorizedHandler(() => {
  if (currentUser.value) {
    loginNotice.value = 'Your login has expired, please log in again';
  }
  forget();
});

function forget() {
  localStorage.removeItem(LOGGED_IN_HINT);
  currentUser.value = null;
}

export async function restoreLogin(): Promise<void> {
  try {
    if (localStorage.getItem(LOGGED_IN_HINT)) {
      currentUser.value = await getMe();
    }
  } catch {
    // A 401 has already forgotten the login; anything else leaves the login page up.
  } finally {
    authReady.value = true;
  }
}

export async function logIn(user: string, password: string): Promise<void> {
  await login(user, password);
  localStorage.setItem(LOGGED_IN_HINT, '1');
  loginNotice.value = null;
  // /me also carries the notifications marker, which the login answer lacks.
  currentUser.value = await getMe();
}

export async function logOut(): Promise<void> {
  try {
    await logout();
  } finally {
    loginNotice.value = null;
    forget();
  }
}
