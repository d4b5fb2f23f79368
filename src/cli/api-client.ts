// The CLI's only way to an array: its HTTP API, with the array's bearer token.
import { ErrorCode, TidemarkError, invalidArgument } from '../core/errors.js';
import { readTokenFile } from '../adapters/fs/api-token.js';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { parseVia, VIA_PREFIX } from '../core/routing/route-decision.js';

/** Response header naming the array that ran a routed request (adapters/http/routing-routes.ts). */
const ANSWERED_BY_HEADER = 'tidemark-answered-by';

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

const REQUEST_TIMEOUT_MS = 60_000;
/** The API's answers are small (its largest are lists); more is not an answer from an array. */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** How the CLI reaches an array: the token, and the CA certificates an https:// array must chain to. */
export interface ApiClientOptions {
  readonly token?: ApiToken | undefined;
  /** PEM; without it the system's CAs verify an https:// array. */
  readonly ca?: Buffer | undefined;
  /**
   * `--via B,C`: every request goes to the array at the URL and on from there, peer to peer, to C,
   * which answers (docs/design/routing-and-relay.md). Empty or absent: the array at the URL answers.
   */
  readonly via?: readonly string[] | undefined;
}

/** The hops of `--via` (or TIDEMARK_VIA), checked; undefined when neither is given. */
export function resolveVia(option: string | undefined, env: NodeJS.ProcessEnv): string[] | undefined {
  const text = option ?? (env.TIDEMARK_VIA || undefined);
  return text === undefined ? undefined : parseVia(text);
}

export class ApiClient {
  constructor(readonly baseUrl: string, private readonly options: ApiClientOptions = {}) {}

  /**
   * Another array, with the same token unless one is given (see `group create --coordinator`). Its
   * URL says where it is: --via does not apply to it.
   */
  withUrl(baseUrl: string, token: ApiToken | undefined = this.options.token): ApiClient {
    return new ApiClient(baseUrl, { ...this.options, token, via: undefined });
  }

  /** The array that answers: the last hop of --via, or the one at the URL. */
  get target(): string {
    const via = this.options.via;
    return via && via.length > 0 ? via[via.length - 1]! : this.baseUrl;
  }

  /** One exchange over node:http(s), which, unlike fetch, takes the CA to verify the array with. */
  private exchange(method: string, url: URL, headers: Record<string, string>, body: string | undefined):
    Promise<{ status: number; text: string; answeredBy: string | undefined }> {
    return new Promise((resolve, reject) => {
      const https = url.protocol === 'https:';
      if (!https && url.protocol !== 'http:') {
        reject(invalidArgument(`--array must be an http:// or https:// URL, not ${url.protocol}`));
        return;
      }
      const options = { method, headers, timeout: REQUEST_TIMEOUT_MS, ...(https && this.options.ca ? { ca: this.options.ca } : {}) };
      const onResponse = (response: IncomingMessage): void => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > MAX_RESPONSE_BYTES) response.destroy(new Error(`the answer exceeds ${MAX_RESPONSE_BYTES} bytes`));
          else chunks.push(chunk);
        });
        response.on('end', () => {
          const answeredBy = response.headers[ANSWERED_BY_HEADER];
          resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), answeredBy: typeof answeredBy === 'string' ? answeredBy : undefined });
        });
        response.on('error', reject);
      };
      const request = https ? httpsRequest(url, options, onResponse) : httpRequest(url, options, onResponse);
      request.on('timeout', () => request.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
      request.on('error', reject);
      request.end(body);
    });
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    const token = this.options.token;
    if (token) headers.authorization = `Bearer ${token.token}`;
    // The API refuses mutating requests without a JSON content type (no cross-site form posts),
    // so every one says JSON, with or without a body.
    if (body !== undefined || MUTATING.has(method)) headers['content-type'] = 'application/json';
    const via = this.options.via ?? [];
    let url: URL;
    try {
      // One prefix routes every command, present and future: the arrays on the way pass the request on as it is.
      url = new URL(via.length > 0 ? `${VIA_PREFIX}${via.join(',')}${path}` : path, this.baseUrl);
    } catch {
      throw invalidArgument(`--array ${JSON.stringify(this.baseUrl)} is not a URL: use e.g. http://127.0.0.1:7480`);
    }
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) headers['content-length'] = String(Buffer.byteLength(payload));
    let response: { status: number; text: string; answeredBy: string | undefined };
    try {
      response = await this.exchange(method, url, headers, payload);
    } catch (error) {
      if (error instanceof TidemarkError) throw error;
      const e = error as NodeJS.ErrnoException;
      const tlsHint = e.code !== undefined && /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|HOSTNAME/.test(e.code)
        ? ' (the array\'s certificate could not be verified: give its CA with --ca FILE, and use the name or address the certificate is for)'
        : e.code === 'ECONNRESET' && url.protocol === 'http:'
          ? ' (if the array serves HTTPS, use an https:// URL)'
          : ' (is it running? set --array or TIDEMARK_ARRAY)';
      throw new TidemarkError(ErrorCode.Unavailable, `cannot reach the array at ${this.baseUrl}: ${e.message}${tlsHint}`);
    }
    // An answer from any other array than the route's end would be a routing bug: never shown as the target's.
    if (via.length > 0 && response.answeredBy !== undefined && response.answeredBy !== via[via.length - 1]) {
      throw new TidemarkError(ErrorCode.Protocol, `asked ${via[via.length - 1]} (via ${via.join(',')}) but ${response.answeredBy} answered`);
    }
    if (response.status === 204) return undefined as T;
    const { text } = response;
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new TidemarkError(ErrorCode.Protocol, `the array answered ${response.status} with non-JSON: ${text.slice(0, 200)}`);
    }
    if (response.status < 200 || response.status > 299) {
      const error = (parsed as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
      const code = (error?.code ?? ErrorCode.Internal) as ErrorCode;
      let message = error?.message ?? `HTTP ${response.status}`;
      if (code === ErrorCode.Unauthorized) {
        message = token
          ? `the array at ${this.baseUrl} refused the token from ${token.source}: it is not that array's DATA/api-token`
          : `the array at ${this.baseUrl} requires its API token: pass --token-file DATA/api-token ` +
            '(DATA: its data directory) or set TIDEMARK_TOKEN_FILE or TIDEMARK_TOKEN';
      }
      throw new TidemarkError(code, message, error?.details ?? {});
    }
    return parsed as T;
  }
}

/** The CA bundle for --ca: a regular PEM file of sane size. */
export async function readCaFile(path: string | undefined): Promise<Buffer | undefined> {
  if (path === undefined) return undefined;
  const { readFile, stat } = await import('node:fs/promises');
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new Error('not a regular file');
    if (info.size > 4 * 1024 * 1024) throw new Error(`${info.size} bytes is not a CA bundle`);
    const pem = await readFile(path);
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return pem;
  } catch (error) {
    throw invalidArgument(`cannot use the CA file ${path}: ${(error as Error).message}`);
  }
}
