// Keys a phone's keyboard lacks, for the terminal on touch screens: Esc, Ctrl (applies to the
// next key typed), Tab and the arrows. Shown only where the pointer is coarse (CSS). The
// buttons never take focus from the terminal, so the on-screen keyboard stays up.

import type { Terminal } from '@xterm/xterm';

export interface KeyBarProps {
  term: Terminal;
  send(data: string): void;
  ctrl: boolean;
  setCtrl(on: boolean): void;
}

const ARROWS = [
  { label: 'Left arrow', glyph: '←', final: 'D' },
  { label: 'Up arrow', glyph: '↑', final: 'A' },
  { label: 'Down arrow', glyph: '↓', final: 'B' },
  { label: 'Right arrow', glyph: '→', final: 'C' },
];

/** What Ctrl+key sends: the key's control character (Ctrl+C → 0x03), or the key itself. */
export function withCtrl(data: string): string {
  if (data.length !== 1) return data;
  const code = data.toUpperCase().charCodeAt(0);
  return code >= 0x40 && code <= 0x5f ? String.fromCharCode(code & 0x1f) : data;
}

export function KeyBar({ term, send, ctrl, setCtrl }: KeyBarProps) {
  const key = (data: () => string) => ({
    // Keep focus (and the on-screen keyboard) on the terminal.
    onPointerDown: (event: PointerEvent) => event.preventDefault(),
    onClick: () => {
      send(data());
      term.focus();
    },
  });
  // Arrows follow the shell's cursor-key mode (vi and less ask for the "application" form).
  const arrow = (final: string) => () => (term.modes.applicationCursorKeysMode ? `\x1bO${final}` : `\x1b[${final}`);
  return (
    <div class="key-bar" role="toolbar" aria-label="Terminal keys">
      <button type="button" class="button" {...key(() => '\x1b')}>
        Esc
      </button>
      <button
        type="button"
        class={`button${ctrl ? ' primary' : ''}`}
        aria-pressed={ctrl}
        onPointerDown={(event) => event.preventDefault()}
        onClick={() => {
          setCtrl(!ctrl);
          term.focus();
        }}
      >
        Ctrl
      </button>
      <button type="button" class="button" {...key(() => '\t')}>
        Tab
      </button>
      {ARROWS.map(({ label, glyph, final }) => (
        <button key={final} type="button" class="button" aria-label={label} {...key(arrow(final))}>
          {glyph}
        </button>
      ))}
    </div>
  );
}
