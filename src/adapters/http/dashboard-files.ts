// The dashboard's static files (built into dist/ui by `npm run build`), served by the API server at
// `/` without a token: they hold no data, and the page asks the API for everything (with the token
// once the API asks for it). Loaded once at start and compressed once; a restrictive
// Content-Security-Policy lets the page load its own script and style and talk to its own origin only.
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';

export interface StaticFile {
  readonly body: Buffer;
  readonly gzip: Buffer;
  readonly contentType: string;
  readonly etag: string;
}

/** URL path → file in the built directory. */
const FILES: ReadonlyArray<readonly [string, string, string]> = [
  ['/', 'index.html', 'text/html; charset=utf-8'],
  ['/ui/app.js', 'app.js', 'text/javascript; charset=utf-8'],
  ['/ui/app.css', 'app.css', 'text/css; charset=utf-8'],
];

export const DASHBOARD_PATHS: readonly string[] = FILES.map(([path]) => path);

/** Nothing but this origin; no inline script or style, no frames, no forms posting elsewhere. */
export const DASHBOARD_CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
  "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ');

export const DASHBOARD_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': DASHBOARD_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  // Revalidate every time (cheap: an ETag answer), so an upgraded array serves its new page at once.
  'cache-control': 'no-cache',
  vary: 'accept-encoding',
};

/** The built files, or undefined with why (the dashboard was not built: the API works without it). */
export async function loadDashboard(dir: string): Promise<{ files: Map<string, StaticFile> } | { missing: string }> {
  const files = new Map<string, StaticFile>();
  for (const [path, name, contentType] of FILES) {
    let body: Buffer;
    try {
      body = await readFile(join(dir, name));
    } catch (error) {
      return { missing: `the dashboard is not built (${(error as Error).message}): run npm run build` };
    }
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
    files.set(path, { body, gzip: gzipSync(body, { level: 9 }), contentType, etag });
  }
  return { files };
}

/** Whether the client takes gzip (`Accept-Encoding: gzip`, not refused with q=0). */
export function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  return header.split(',').some((part) => {
    const [coding, ...params] = part.trim().toLowerCase().split(';');
    if (coding !== 'gzip' && coding !== '*') return false;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}
