// Users: list, add (name, role, password), change a role, reset a password, delete.
// The server's messages (last admin, name taken, password too short) are shown as they are.

import { useState } from 'preact/hooks';
import { changeUserRole, createUser, deleteUser, listUsers, setUserPassword } from '../../api/endpoints';
import { describeError } from '../../api/http';
import type { Role, UserView } from '../../api/types';
import { ConfirmButton } from '../../components/ConfirmButton';
import { Table } from '../../components/Table';
import { dateTime } from '../../format';
import { currentUser } from '../../state/auth';
import { useList } from './useList';

const ROLES: Role[] = ['viewer', 'operator', 'admin'];

export function UsersSection() {
  const { items: users, error, reload } = useList(listUsers);
  return (
    <section class="card section" aria-labelledby="users-title">
      <h2 id="users-title">Users</h2>
      <AddUserForm onAdded={reload} />
      {error && (
        <p class="notice error" role="alert">
          {error}
        </p>
      )}
      {users && (
        <Table columns={['Name', 'Role', 'Created']}>
          {users.map((user) => (
            <UserRow key={user.name} user={user} onChanged={reload} />
          ))}
        </Table>
      )}
    </section>
  );
}

function AddUserForm({ onAdded }: { onAdded: () => void }) {
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('operator');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    createUser({ name: name.trim(), role, password })
      .then(() => {
        setName('');
        setPassword('');
        onAdded();
      })
      .catch((e: unknown) => setError(describeError(e)))
      .finally(() => setBusy(false));
  };
  return (
    <form class="inline-form" onSubmit={submit} aria-label="Add a user">
      <label class="field">
        <span>Name</span>
        <input required autoComplete="off" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label class="field">
        <span>Role</span>
        <select value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
          {ROLES.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
      </label>
      <label class="field">
        <span>Password</span>
        <input
          required
          type="password"
          autoComplete="new-password"
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
      </label>
      <button type="submit" class="button primary" disabled={busy}>
        Add user
      </button>
      {error && (
        <p class="notice error form-error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

function UserRow({ user, onChanged }: { user: UserView; onChanged: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [resetting, setResetting] = useState(false);
  const [password, setPassword] = useState('');
  const isMe = currentUser.value?.name === user.name;
  const run = (action: Promise<unknown>, done?: string) => {
    setError(null);
    setNotice(null);
    action.then(
      () => {
        if (done) setNotice(done);
        onChanged();
      },
      (e: unknown) => setError(describeError(e)),
    );
  };
  const savePassword = (event: Event) => {
    event.preventDefault();
    run(
      setUserPassword(user.name, password).then(() => {
        setResetting(false);
        setPassword('');
      }),
      'Password changed.',
    );
  };
  return (
    <tr>
      <td>
        {user.name}
        {isMe && <span class="muted"> (you)</span>}
      </td>
      <td>
        <select
          aria-label={`Role of ${user.name}`}
          value={user.role}
          onChange={(e) => run(changeUserRole(user.name, e.currentTarget.value as Role))}
        >
          {ROLES.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
      </td>
      <td>{dateTime(user.created_at)}</td>
      <td>
        <div class="row-actions">
          {resetting ? (
            <form class="inline-form compact" onSubmit={savePassword} aria-label={`New password for ${user.name}`}>
              <input
                required
                type="password"
                autoComplete="new-password"
                aria-label={`New password for ${user.name}`}
                placeholder="New password"
                value={password}
                autoFocus
                onInput={(e) => setPassword(e.currentTarget.value)}
              />
              <button type="submit" class="button primary">
                Save
              </button>
              <button type="button" class="button" onClick={() => setResetting(false)}>
                Cancel
              </button>
            </form>
          ) : (
            <button type="button" class="button" onClick={() => setResetting(true)}>
              Reset password
            </button>
          )}
          <ConfirmButton
            label="Delete"
            question={`Delete ${user.name}?`}
            onConfirm={() => run(deleteUser(user.name))}
          />
          {notice && (
            <span class="ok-text" role="status">
              {notice}
            </span>
          )}
          {error && (
            <span class="error-text" role="alert">
              {error}
            </span>
          )}
        </div>
      </td>
    </tr>
  );
}
