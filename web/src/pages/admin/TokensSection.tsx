// Enrollment tokens: create (lifetime, uses) and see the secret once, list, revoke.

import { useState } from 'preact/hooks';
import { createToken, listTokens, revokeToken } from '../../api/endpoints';
import { describeError } from '../../api/http';
import type { CreatedToken, TokenView } from '../../api/types';
import { ConfirmButton } from '../../components/ConfirmButton';
import { CopyButton } from '../../components/CopyButton';
import { Table } from '../../components/Table';
import { dateTime } from '../../format';
import { now } from '../../state/clock';
import { useList } from './useList';

const LIFETIMES: { label: string; secs: number }[] = [
  { label: '10 minutes', secs: 600 },
  { label: '1 hour', secs: 3600 },
  { label: '1 day', secs: 86_400 },
  { label: '7 days', secs: 604_800 },
  { label: '30 days', secs: 2_592_000 },
];

export function TokensSection() {
  const { items: tokens, error, reload } = useList(listTokens);
  const [created, setCreated] = useState<CreatedToken | null>(null);
  return (
    <section class="card section" aria-labelledby="tokens-title">
      <h2 id="tokens-title">Enrollment tokens</h2>
      <p class="muted">An agent started with a token is approved as it enrolls.</p>
      <CreateTokenForm
        onCreated={(token) => {
          setCreated(token);
          reload();
        }}
      />
      {created && <NewToken token={created} onDismiss={() => setCreated(null)} />}
      {error && (
        <p class="notice error" role="alert">
          {error}
        </p>
      )}
      {tokens && tokens.length === 0 && <p class="empty">No enrollment token.</p>}
      {tokens && tokens.length > 0 && (
        <Table columns={['Id', 'Created by', 'Created', 'Expires', 'Uses', 'State']}>
          {tokens.map((token) => (
            <TokenRow key={token.id} token={token} onChanged={reload} />
          ))}
        </Table>
      )}
    </section>
  );
}

function CreateTokenForm({ onCreated }: { onCreated: (token: CreatedToken) => void }) {
  const [ttl, setTtl] = useState(3600);
  const [uses, setUses] = useState(1);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    createToken({ ttl_secs: ttl, uses })
      .then(onCreated)
      .catch((e: unknown) => setError(describeError(e)))
      .finally(() => setBusy(false));
  };
  return (
    <form class="inline-form" onSubmit={submit} aria-label="Create an enrollment token">
      <label class="field">
        <span>Valid for</span>
        <select value={ttl} onChange={(e) => setTtl(Number(e.currentTarget.value))}>
          {LIFETIMES.map((l) => (
            <option key={l.secs} value={l.secs}>
              {l.label}
            </option>
          ))}
        </select>
      </label>
      <label class="field">
        <span>Uses</span>
        <input
          type="number"
          min={1}
          max={10000}
          required
          value={uses}
          onInput={(e) => setUses(Number(e.currentTarget.value))}
        />
      </label>
      <button type="submit" class="button primary" disabled={busy}>
        Create token
      </button>
      {error && (
        <p class="notice error form-error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

function NewToken({ token, onDismiss }: { token: CreatedToken; onDismiss: () => void }) {
  return (
    <div class="notice success new-token" role="status">
      <p>
        <strong>Copy this token now:</strong> it is shown only once.
      </p>
      <div class="secret">
        <code>{token.token}</code>
        <CopyButton text={token.token} label="Copy the enrollment token" showText />
      </div>
      <p class="muted small">
        On the device: <code>postern agent --server SERVER:2200 --data-dir DIR --token TOKEN</code>
        . The part after <code>@</code> is this server's key fingerprint: the agent connects to
        no other server, not even the first time.
      </p>
      <button type="button" class="button" onClick={onDismiss}>
        Done
      </button>
    </div>
  );
}

function tokenState(token: TokenView, at: number): string {
  if (token.revoked) return 'revoked';
  if (token.expires_at <= at) return 'expired';
  if (token.uses >= token.max_uses) return 'used up';
  return 'active';
}

function TokenRow({ token, onChanged }: { token: TokenView; onChanged: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const state = tokenState(token, now.value);
  return (
    <tr>
      <td>
        <code>{token.id}</code>
      </td>
      <td>{token.created_by}</td>
      <td>{dateTime(token.created_at)}</td>
      <td>{dateTime(token.expires_at)}</td>
      <td class="numeric">
        {token.uses} / {token.max_uses}
      </td>
      <td>
        <span class={`badge badge-token-${state.replace(' ', '-')}`}>{state}</span>
      </td>
      <td>
        <div class="row-actions">
          {state === 'active' && (
            <ConfirmButton
              label="Revoke"
              question="Revoke this token?"
              onConfirm={() => revokeToken(token.id).then(onChanged, (e: unknown) => setError(describeError(e)))}
            />
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
