// Terminal copy and paste. Ctrl+C and Ctrl+V belong to the shell (interrupt, literal next),
// so, as in desktop terminals, the clipboard is Ctrl+Shift+C and Ctrl+Shift+V. Right-click
// copy and paste work through xterm's own textarea and the browser's context menu.

import type { Terminal } from '@xterm/xterm';
import { copyText } from '../clipboard';

export function installClipboardKeys(term: Terminal): void {
  term.attachCustomKeyEventHandler((event) => {
    if (event.type !== 'keydown' || !event.ctrlKey || !event.shiftKey || event.altKey || event.metaKey) return true;
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
