// The CLI's only way to an array: its HTTP API, with the array's bearer token.
import { ErrorCode, TidemarkError, invalidArgument } from '../core/errors.js';
import { readTokenFile } from '../adapters/fs/api-token.js';

export const DEFAULT_ARRAY_URL = 'http://127.0.0.1:7480';

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Where the token came from, for error messages (never the token itself). */
export interface ApiToken {
  readonly token: string;
  readonly source: string;
}

/**
 * The token the CLI sends: `--token-file F`, else env TIDEMARK_TOKEN_FILE, else env TIDEMARK_TOKEN;
 * none is allowed (only /metrics answers then). Both variables set is refused rather than guessed.
 */
export async function resolveToken(tokenFile: string | undefined, env: NodeJS.ProcessEnv): Promise<ApiToken | undefined> {
  const read = async (path: string, source: string): Promise<ApiToken> => {
    try {
      return { token: await readTokenFile(path), source };
    } catch (error) {
      throw invalidArgument((error as Error).message);
    }
  };
  if (tokenFile !== undefined) return read(tokenFile, `--token-file ${tokenFile}`);
  const fromFile = env.TIDEMARK_TOKEN_FILE || undefined;
  const direct = env.TIDEMARK_TOKEN || undefined;
  if (fromFile !== undefined && direct !== undefined) {
    throw invalidArgument('both TIDEMARK_TOKEN_FILE and TIDEMARK_TOKEN are set: unset one (or pass --token-file)');
  }
  if (fromFile !== undefined) return read(fromFile, `TIDEMARK_TOKEN_FILE=${fromFile}`);
  if (direct !== undefined) {
    const token = direct.trim();
    if (token.length === 0 || /\s/.test(token)) throw invalidArgument('TIDEMARK_TOKEN must hold one token without spaces');
    return { token, source: 'TIDEMARK_TOKEN' };
  }
  return undefined;
}

export class ApiClient {
  constructor(readonly baseUrl: string, private readonly token?: ApiToken) {}

  /** The same token for another array (when the operator says so; see `group create --coordinator`). */
  withUrl(baseUrl: string, token: ApiToken | undefined = this.token): ApiClient {
    return new ApiClient(baseUrl, token);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token.token}`;
    // The API refuses mutating requests without a JSON content type (no cross-site form posts),
    // so every one says JSON, with or without a body.
    if (body !== undefined || MUTATING.has(method)) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(new URL(path, this.baseUrl), {
        method,
        headers,
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
      const code = (error?.code ?? ErrorCode.Internal) as ErrorCode;
      let message = error?.message ?? `HTTP ${response.status}`;
      if (code === ErrorCode.Unauthorized) {
        message = this.token
          ? `the array at ${this.baseUrl} refused the token from ${this.token.source}: it is not that array's DATA/api-token`
          : `the array at ${this.baseUrl} requires its API token: pass --token-file DATA/api-token ` +
            '(DATA: its data directory) or set TIDEMARK_TOKEN_FILE or TIDEMARK_TOKEN';
      }
      throw new TidemarkError(code, message, error?.details ?? {});
    }
    return parsed as T;
  }
}
