// Who may use the HTTP API: the bearer token, the Host header (DNS rebinding) and the content type
// of mutating requests (cross-site "simple" requests). One function decides, before the body is read;
// the server calls it for every request, including unknown routes, so no route can forget it.
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { ErrorCode, TidemarkError } from '../../core/errors.js';

/** What a token allows: everything, or only reading (GET/HEAD), e.g. for monitoring. */
export type TokenScope = 'admin' | 'read';

export interface ApiAccessPolicy {
  /** Each accepted token with its scope. Empty: nothing but public routes is served. */
  readonly tokens: ReadonlyArray<{ readonly token: string; readonly scope: TokenScope }>;
  /**
   * Host names (lower case, no port) accepted in the Host header besides IP literals, `localhost`
   * and `*.localhost`; `*` accepts any (for a reverse proxy that sets its own Host).
   */
  readonly hosts: ReadonlySet<string>;
}

export interface AccessRequest {
  readonly method: string;
  readonly host: string | undefined;
  readonly authorization: string | undefined;
  readonly contentType: string | undefined;
  /** A route that needs no token (`/metrics`); Host is still checked. */
  readonly isPublic: boolean;
}

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const READING = new Set(['GET', 'HEAD']);

/** Fixed-length digests, so the comparison takes the same time whatever the lengths. */
const digest = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/** The name part of a Host header value: `name:port`, `[v6]:port`, `name`. Lower case. */
export function hostName(header: string): string {
  const value = header.trim().toLowerCase();
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    return end < 0 ? value : value.slice(1, end);
  }
  const colon = value.lastIndexOf(':');
  const name = colon < 0 || value.indexOf(':') !== colon ? value : value.slice(0, colon);
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

/**
 * A Host a DNS-rebinding page cannot produce: an IP literal (the page's origin would be that
 * address, not an attacker's name), a loopback name browsers never resolve through DNS, or a name
 * the operator listed.
 */
export function isServedHost(header: string | undefined, hosts: ReadonlySet<string>): boolean {
  // HTTP/1.1 clients must send Host and every browser does; a request without one is not from a page.
  if (header === undefined) return true;
  if (hosts.has('*')) return true;
  const name = hostName(header);
  if (isIP(name) !== 0) return true;
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  return hosts.has(name);
}

/** The media type of a Content-Type header, without parameters, lower case. */
const mediaType = (header: string | undefined): string => (header ?? '').split(';')[0]!.trim().toLowerCase();

/** The error to answer with, or undefined when the request may proceed. */
export function checkAccess(request: AccessRequest, policy: ApiAccessPolicy): TidemarkError | undefined {
  if (!isServedHost(request.host, policy.hosts)) {
    return new TidemarkError(ErrorCode.Forbidden,
      `Host ${JSON.stringify(request.host)} is not a name this array serves (DNS rebinding protection); ` +
      'use its address, localhost, or a name given with `array start --api-host NAME`');
  }
  if (request.isPublic) return undefined;
  const scope = scopeOf(request.authorization, policy);
  if (scope === undefined) {
    return new TidemarkError(ErrorCode.Unauthorized,
      request.authorization === undefined
        ? 'this API requires a token: send Authorization: Bearer TOKEN (the array writes it to DATA/api-token)'
        : 'the token is not valid for this array');
  }
  if (!READING.has(request.method) && scope === 'read') {
    return new TidemarkError(ErrorCode.Forbidden, `a read-only token cannot ${request.method}: use the array's api-token`);
  }
  if (MUTATING.has(request.method) && mediaType(request.contentType) !== 'application/json') {
    return new TidemarkError(ErrorCode.UnsupportedMediaType,
      `${request.method} requests need Content-Type: application/json (got ${JSON.stringify(request.contentType ?? null)})`);
  }
  return undefined;
}

/** The policy's token digests, computed once per policy rather than per request. */
const digestsOf = new WeakMap<ApiAccessPolicy, ReadonlyArray<{ digest: Buffer; scope: TokenScope }>>();

function scopeOf(authorization: string | undefined, policy: ApiAccessPolicy): TokenScope | undefined {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? '');
  if (!match) return undefined;
  const offered = digest(match[1]!);
  let candidates = digestsOf.get(policy);
  if (candidates === undefined) {
    candidates = policy.tokens.map((t) => ({ digest: digest(t.token), scope: t.scope }));
    digestsOf.set(policy, candidates);
  }
  let scope: TokenScope | undefined;
  // Compare with every token, even after a match, so timing does not say which one matched.
  for (const candidate of candidates) {
    if (timingSafeEqual(offered, candidate.digest) && scope === undefined) scope = candidate.scope;
  }
  return scope;
}
