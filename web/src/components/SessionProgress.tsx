// A session's life as steps: requested → starting → running (⇄ detached while the device is
// out of reach) (→ stopping → stopped, or failed), each with when it began and how long it took, from the session's history.

import type { SessionState, SessionStep, SessionView } from '../api/types';
import { clockTime, phaseDuration } from '../format';
import { now } from '../state/clock';
import { isOpen } from '../state/sessions';

const START_PHASES: SessionState[] = ['requested', 'starting', 'running'];

const LABELS: Record<SessionState, string> = {
  requested: 'Requested: the agent has been asked to start SSH',
  starting: 'Starting: the server and the agent set up the tunnel',
  running: 'Running: connected',
  detached: 'Detached: the device is out of reach; its shells wait for it to come back',
  stopping: 'Stopping: closing the tunnel',
  stopped: 'Stopped',
  failed: 'Failed',
};

/** The session's steps; before its history is loaded, what the session itself tells. */
export function stepsOf(session: SessionView): SessionStep[] {
  if (session.history?.length) return session.history;
  return [{ state: session.state, reason: session.reason, time: session.updated_at }];
}

export function SessionProgress({ session }: { session: SessionView }) {
  const steps = stepsOf(session);
  const reached = new Set(steps.map((s) => s.state));
  const opening = session.state === 'requested' || session.state === 'starting';
  const upcoming = opening ? START_PHASES.filter((p) => !reached.has(p)) : [];
  return (
    <ol class="progress" aria-label="Connection progress">
      {steps.map((step, i) => (
        <Step key={`${step.state}-${step.time}`} step={step} next={steps[i + 1]} open={isOpen(session.state)} />
      ))}
      {upcoming.map((state) => (
        <li key={state} class="step upcoming">
          <span class="step-mark" aria-hidden="true" />
          <span class="step-label">{LABELS[state]}</span>
        </li>
      ))}
    </ol>
  );
}

function Step({ step, next, open }: { step: SessionStep; next?: SessionStep; open: boolean }) {
  const current = next === undefined;
  // A spinner while something is under way; running is where a session is meant to be.
  let kind = 'done';
  if (step.state === 'failed') kind = 'failed';
  else if (current && open) kind = step.state === 'running' ? 'active' : 'current';
  let timing: string;
  if (next) timing = `${step.state === 'running' ? 'lasted' : 'took'} ${phaseDuration(next.time - step.time)}`;
  else if (open) timing = `for ${phaseDuration(now.value - step.time)}`;
  else timing = '';
  return (
    <li class={`step ${kind}`} data-state={step.state}>
      <span class="step-mark" aria-hidden="true" />
      <span class="step-label">{LABELS[step.state]}</span>
      <span class="step-time">
        <time dateTime={new Date(step.time).toISOString()}>{clockTime(step.time)}</time>
        {timing && <span class="step-took"> · {timing}</span>}
      </span>
      {step.reason && <span class="step-reason">{step.reason}</span>}
    </li>
  );
}
