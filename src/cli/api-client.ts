// The CLI's only way to an array: its HTTP API.
import { ErrorCode, TidemarkError } from '../core/errors.js';

export const DEFAULT_ARRAY_URL = 'http://127.0.0.1:7480';

export class ApiClient {
  constructor(readonly baseUrl: string) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let response: Response;
    try {
      response = await fetch(new URL(path, this.baseUrl), {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(60_000),
      });
    } catch (error) {
      throw new TidemarkError(ErrorCode.Unavailable,
        `cannot reach the array at ${this.baseUrl}: ${(error as Error & { cause?: Error }).cause?.message ?? (error as Error).message}` +
        ' (is it running? set --array or TIDEMARK_ARRAY)');
    }
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new TidemarkError(ErrorCode.Protocol, `the array answered ${response.status} with non-JSON: ${text.slice(0, 200)}`);
    }
    if (!response.ok) {
      const error = (parsed as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
      throw new TidemarkError((error?.code ?? ErrorCode.Internal) as ErrorCode, error?.message ?? `HTTP ${response.status}`, error?.details ?? {});
    }
    return parsed as T;
  }
}
