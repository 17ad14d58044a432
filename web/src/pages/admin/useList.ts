// A list loaded from the server with its loading and error state, reloadable after a change.

import { useCallback, useEffect, useState } from 'preact/hooks';
import { describeError } from '../../api/http';

export function useList<T>(load: () => Promise<T[]>) {
  const [items, setItems] = useState<T[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const reload = useCallback(() => {
    load().then(
      (list) => {
        setItems(list);
        setError(null);
      },
      (e: unknown) => setError(describeError(e)),
    );
  }, [load]);
  useEffect(reload, [reload]);
  return { items, error, reload };
}
