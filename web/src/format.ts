// How times, durations, sizes and identifiers read on screen.

/** "4 s", "3 min 05 s", "2 h 10 min", "3 d 4 h". */
export function duration(ms: number): string {
  const s = Math.floor(Math.max(0, ms) / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${String(m % 60).padStart(2, '0')} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** Phases can be quick: "85 ms", "2.4 s", then like `duration`. */
export function phaseDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  return duration(ms);
}

/** "N s ago" from a moment and the shared clock's now. */
export function ago(then: number, now: number): string {
  const ms = Math.max(0, now - then);
  if (ms < 60_000) return `${Math.floor(ms / 1000)} s ago`;
  return `${duration(ms).replace(/ \d+ s$/, '')} ago`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

export function clockTime(ms: number): string {
  return timeFormat.format(ms);
}

export function dateTime(ms: number): string {
  return dateTimeFormat.format(ms);
}

/** Today's events show the time only; older ones the date too. */
export function eventTime(ms: number, now: number): string {
  return new Date(ms).toDateString() === new Date(now).toDateString() ? clockTime(ms) : dateTime(ms);
}

export function shortDid(did: string): string {
  return did.length > 16 ? `${did.slice(0, 16)}…` : did;
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}
