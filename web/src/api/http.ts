// The one place that talks HTTP to the server: JSON in and out, the CSRF header on every
// change, errors turned into ApiError, and an expired login reported once to whoever listens.

import type { ErrorBody } from './types';

export const API = '/api/v1';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Seconds to wait, from Retry-After (429). */
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface RequestOptions {
  body?: unknown;
  /** A 401 here means "wrong password", not "login expired" (only the login request). */
  unauthorizedIsAnswer?: boolean;
  /** Sees the headers of a successful answer (a page's total and next cursor). */
  onHeaders?: (headers: Headers) => void;
}

let onUnauthorized: () => void = () => {};

/** Called whenever the server answers 401 to a logged-in request. */
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler;
}

export async function request<T>(method: Method, path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  let body: string | undefined;
  if (method !== 'GET') {
    // The server refuses cookie-authenticated changes without this header: a cross-site
    // form cannot set it, so it proves the request came from this app.
    headers['x-postern-csrf'] = '1';
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.body ?? {});
  }
  let response: Response;
  try {
    response = await fetch(API + path, { method, headers, body, credentials: 'same-origin' });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.');
  }
  if (response.status === 401 && !options.unauthorizedIsAnswer) {
    onUnauthorized();
  }
  if (!response.ok) {
    throw await errorFrom(response);
  }
  options.onHeaders?.(response.headers);
  if (response.status === 204) {
    return undefined as T;
  }
  return (await response.json()) as T;
}

/**
 * What a person is told when the server's storage fails: what happened, that the change was
 * not saved, and what to do — where the server's own words ("the server's storage is full")
 * leave them guessing whether to try again.
 */
const STORAGE_MESSAGES: Record<number, string> = {
  507:
    "The server's disk is full, so this change was not saved. Ask an administrator to free " +
    'space on the server, then try again.',
  503:
    'The server cannot use its storage right now, so this change was not saved. Try again in a ' +
    'moment; if it lasts, ask an administrator to check the server.',
};

const STORAGE_CODES: Record<string, number> = { storage_full: 507, storage_unavailable: 503 };

export async function errorFrom(response: Response): Promise<ApiError> {
  const retry = Number(response.headers.get('retry-after'));
  const retryAfter = Number.isFinite(retry) && retry > 0 ? retry : undefined;
  let code = 'http_' + response.status;
  let message = response.statusText || 'Request failed';
  try {
    const body = (await response.json()) as Partial<ErrorBody>;
    if (typeof body.error === 'string' && typeof body.message === 'string') {
      code = body.error;
      message = body.message;
    }
  } catch {
    // Not JSON (a proxy's error page, say): the status text says what it can.
  }
  const storage = STORAGE_CODES[code] ?? (response.status === 507 ? 507 : undefined);
  if (storage !== undefined) message = STORAGE_MESSAGES[storage] ?? message;
  return new ApiError(response.status, code, message, retryAfter);
}

/** A message for people from anything a request may throw. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

export function segment(value: string): string {
  return encodeURIComponent(value);
}
