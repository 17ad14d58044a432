// A small button that copies a text and says so for two seconds.

import { useEffect, useState } from 'preact/hooks';
import { copyText } from '../clipboard';
import { CheckIcon, CopyIcon } from './Icons';

interface Props {
  text: string;
  /** What is copied, for screen readers and the tooltip: "Copy DID of web-1". */
  label: string;
  /** Shows a word beside the icon. */
  showText?: boolean;
}

export function CopyButton({ text, label, showText = false }: Props) {
  const [state, setState] = useState<'idle' | 'copied' | 'failed'>('idle');
  useEffect(() => {
    if (state === 'idle') return undefined;
    const timer = setTimeout(() => setState('idle'), 2000);
    return () => clearTimeout(timer);
  }, [state]);
  const copy = () =>
    copyText(text).then(
      () => setState('copied'),
      () => setState('failed'),
    );
  const word = state === 'copied' ? 'Copied' : state === 'failed' ? 'Copy failed' : 'Copy';
  return (
    <button type="button" class="button icon-button copy-button" aria-label={label} title={label} onClick={copy}>
      {state === 'copied' ? <CheckIcon /> : <CopyIcon />}
      {showText && <span>{word}</span>}
      <span class="visually-hidden" aria-live="polite">
        {state === 'idle' ? '' : word}
      </span>
    </button>
  );
}
