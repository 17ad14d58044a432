// Administration: users and enrollment tokens (administrators only; the server checks too).

import { isAdmin } from '../state/auth';
import { TokensSection } from './admin/TokensSection';
import { UsersSection } from './admin/UsersSection';

export function AdminPage() {
  if (!isAdmin.value) {
    return (
      <section class="page">
        <h1>Admin</h1>
        <p class="notice">Only administrators can manage users and enrollment tokens.</p>
      </section>
    );
  }
  return (
    <section class="page" aria-labelledby="admin-title">
      <div class="page-header">
        <h1 id="admin-title">Admin</h1>
      </div>
      <UsersSection />
      <TokensSection />
    </section>
  );
}
