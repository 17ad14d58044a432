// Loads the terminal (xterm.js and its styles) the first time a terminal is shown, so that
// the login page and the agent list stay light.

import { useEffect, useState } from 'preact/hooks';
import type { TerminalProps } from '../terminal/TerminalView';

type TerminalModule = typeof import('../terminal/TerminalView');

let loading: Promise<TerminalModule> | null = null;

function loadTerminal(): Promise<TerminalModule> {
  loading ??= import('../terminal/TerminalView').catch((error: unknown) => {
    loading = null; // let the next attempt try again
    throw error;
  });
  return loading;
}

export function LazyTerminal(props: TerminalProps) {
  const [module, setModule] = useState<TerminalModule | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let live = true;
    loadTerminal().then(
      (loaded) => live && setModule(loaded),
      () => live && setFailed(true),
    );
    return () => {
      live = false;
    };
  }, []);
  if (failed) return <p class="notice error">The terminal could not be loaded. Reload the page to try again.</p>;
  if (!module) return <p class="notice muted">Loading the terminal…</p>;
  const View = module.default;
  return <View {...props} />;
}
