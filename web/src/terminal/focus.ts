// Gives focus back to the terminal on screen, from controls that sit beside it (the font
// buttons): what is typed next must reach the shell, not the button. Kept apart from the
// terminal so the panel can call it without loading xterm.js.

let focuser: (() => void) | null = null;

/** The terminal on screen registers itself; null when it goes. */
export function setTerminalFocuser(focus: (() => void) | null): void {
  focuser = focus;
}

export function focusTerminal(): void {
  focuser?.();
}
