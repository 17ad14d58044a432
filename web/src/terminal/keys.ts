// The terminal's own keys. Ctrl+C and Ctrl+V belong to the shell (interrupt, literal next),
// so, as in desktop terminals, the clipboard is Ctrl+Shift+C and Ctrl+Shift+V. Everything
// else goes to the shell too — Tab, Escape, F6 — so one more key leaves the terminal (no
// keyboard trap, WCAG 2.1.2): Ctrl+Shift+E, which a shell never receives (a terminal sends
// Ctrl+Shift+E exactly as Ctrl+E). Right-click copy and paste work through xterm's own
// textarea and the browser's context menu.

import type { Terminal } from '@xterm/xterm';
import { copyText } from '../clipboard';

/** Shown in the panel and announced on the terminal (aria-keyshortcuts). */
export const LEAVE_KEY = 'Ctrl+Shift+E';
export const LEAVE_KEY_ARIA = 'Control+Shift+E';

export function installTerminalKeys(term: Terminal, onLeave: () => void): void {
  term.attachCustomKeyEventHandler((event) => {
    // A read-only last screen keeps no key: Tab moves on as anywhere else.
    if (term.options.disableStdin && event.key === 'Tab') return false;
    if (event.type !== 'keydown' || !event.ctrlKey || !event.shiftKey || event.altKey || event.metaKey) return true;
    if (event.code === 'KeyE') {
      event.preventDefault();
      onLeave();
      return false;
    }
    if (event.code === 'KeyC') {
      const selection = term.getSelection();
      if (selection) void copyText(selection).catch(() => undefined);
      event.preventDefault();
      return false;
    }
    if (event.code === 'KeyV') {
      // Returning false keeps xterm from sending ^V; the browser then fires its own paste
      // event on xterm's textarea, which xterm turns into (bracketed) input.
      return false;
    }
    return true;
  });
}
