// The page's only way to the array: its HTTP API, same origin. The token is asked for only when the
// API answers 401 (behind a proxy that adds the header it never is), and kept for this tab only.

const TOKEN_KEY = 'tidemark-api-token';

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

/** The API wants a token the page does not have (or has a wrong one). */
export class TokenNeeded extends ApiError {}

export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token: string | null): void {
  if (token === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token.trim());
}

export async function api<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  const token = storedToken();
  if (token) headers.authorization = `Bearer ${token}`;
  // Every mutating request says JSON (the API refuses cross-site "simple" requests).
  if (method !== 'GET') headers['content-type'] = 'application/json';
  const init: RequestInit = { method, headers, cache: 'no-store', ...(signal ? { signal } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    throw new ApiError(response.status, 'TM_ERR_PROTOCOL', `the array answered ${response.status} with non-JSON`);
  }
  if (response.ok) return parsed as T;
  const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
  const code = error?.code ?? 'TM_ERR_INTERNAL';
  const message = error?.message ?? `HTTP ${response.status}`;
  if (response.status === 401) throw new TokenNeeded(401, code, message);
  throw new ApiError(response.status, code, message);
}
