// Advice for a session that is slow to start or failed (from the SSH feature's
// troubleshooting notes): an offline agent, an unavailable agent or an unstable network.

import type { AgentView, SessionView } from '../api/types';
import { ago } from '../format';
import { now } from '../state/clock';
import { livenessOf } from '../state/fleet';
import { stepsOf } from './SessionProgress';

/** A healthy agent answers in well under a second; past this, say what may be wrong. */
const SLOW_START_MS = 8000;

export function Troubleshooting({ session, agent }: { session: SessionView; agent?: AgentView }) {
  const name = session.agent.name;
  const offline = agent !== undefined && !agent.online;
  const silent = agent !== undefined && livenessOf(agent) === 'not_responding';
  const heard = agent?.last_seen ? ` (last heard from ${ago(agent.last_seen, now.value)})` : '';
  if (session.state === 'failed') {
    const reason = session.reason ?? 'no reason given';
    return (
      <div class="notice error" role="alert">
        <p>
          <strong>SSH failed:</strong> {reason}
        </p>
        {offline ? (
          <p>{name} is offline. Check that the device is on and its agent is running and connected, then try again.</p>
        ) : silent ? (
          <p>
            {name} is connected but not responding{heard}: it may be overloaded, or its network may be failing. Wait
            until it answers again, then try again.
          </p>
        ) : agent?.online && /offline|link lost/i.test(reason) ? (
          <p>{name} was offline or lost its link; it is online again. Try again.</p>
        ) : (
          <p>Try again. If it keeps failing, the agent may be unavailable or its network connection unstable.</p>
        )}
      </div>
    );
  }
  if (session.state !== 'requested' && session.state !== 'starting') return null;
  const steps = stepsOf(session);
  const since = steps[steps.length - 1]?.time ?? session.created_at;
  if (offline) {
    return (
      <div class="notice warning" role="status">
        <p>
          {name} is offline. SSH starts when the agent is back online, or fails after a minute. Check that the device is
          on and connected.
        </p>
      </div>
    );
  }
  if (silent) {
    return (
      <div class="notice warning" role="status">
        <p>
          {name} is not responding{heard}. SSH starts when it answers again, or fails after a minute. Its network
          may be failing, or the device may be overloaded.
        </p>
      </div>
    );
  }
  if (now.value - since < SLOW_START_MS) return null;
  return (
    <div class="notice warning" role="status">
      <p>
        SSH is taking a while to establish. The agent may be unavailable, or its network connection unstable. Click
        “Close SSH connection” and try again.
      </p>
    </div>
  );
}
