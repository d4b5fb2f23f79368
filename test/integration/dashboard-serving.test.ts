// How the API server serves the dashboard's static files: content types, gzip when asked for,
// ETag revalidation, the security headers, and a clear answer when the dashboard was not built.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer } from '../../src/adapters/http/api-server.js';
import type { ApiBackend } from '../../src/adapters/http/types.js';
import { acceptsGzip } from '../../src/adapters/http/dashboard-files.js';
import { repoRoot } from '../helpers/daemon.js';

const quiet = { info() {}, warn() {}, debug() {}, error() {} };
const noBackend = new Proxy({}, { get: () => { throw new Error('the static files need no backend'); } }) as ApiBackend;
const access = { tokens: [{ token: 'the-token', scope: 'admin' as const }], hosts: new Set<string>() };

test('the built dashboard: types, gzip, ETag, CSP and no token needed', async () => {
  const server = await startApiServer({ backend: noBackend, logger: quiet, host: '127.0.0.1', port: 0, version: 't', access, dashboardDir: join(repoRoot, 'dist', 'ui') });
  try {
    const base = `http://127.0.0.1:${server.address.port}`;
    const expected: Record<string, RegExp> = { '/': /^text\/html/, '/ui/app.js': /^text\/javascript/, '/ui/app.css': /^text\/css/ };
    for (const [path, type] of Object.entries(expected)) {
      // fetch asks for gzip and decodes it; the encoding header says what travelled.
      const response = await fetch(base + path);
      assert.equal(response.status, 200, path);
      assert.match(response.headers.get('content-type')!, type);
      assert.equal(response.headers.get('content-encoding'), 'gzip', path);
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(response.headers.get('x-frame-options'), 'DENY');
      assert.match(response.headers.get('content-security-policy')!, /^default-src 'none'; script-src 'self'; style-src 'self'/);
      const body = await response.text();
      assert.ok(body.length > 0);
      const etag = response.headers.get('etag')!;
      const again = await fetch(base + path, { headers: { 'if-none-match': etag } });
      assert.equal(again.status, 304, `${path} revalidates`);
      const plain = await fetch(base + path, { headers: { 'accept-encoding': 'identity' } });
      assert.equal(plain.headers.get('content-encoding'), null);
      assert.equal(await plain.text(), body);
    }
    const page = await (await fetch(base)).text();
    assert.match(page, /<script type="module" src="\/ui\/app\.js"><\/script>/);
    assert.doesNotMatch(page, /<script>|style=/, 'no inline script or style: the CSP forbids them');
  } finally {
    await server.close();
  }
});

test('without a built dashboard, / says how to build it and the API works as before', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-ui-'));
  await writeFile(join(dir, 'index.html'), '<!doctype html>'); // only part of a build
  const server = await startApiServer({ backend: noBackend, logger: quiet, host: '127.0.0.1', port: 0, version: 't', access, dashboardDir: dir });
  try {
    const response = await fetch(`http://127.0.0.1:${server.address.port}/`);
    assert.equal(response.status, 404);
    const body = await response.json() as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'TM_ERR_NOT_FOUND');
    assert.match(body.error.message, /dashboard is not built.*npm run build/);
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('gzip only when the client takes it', () => {
  assert.equal(acceptsGzip('gzip, deflate, br'), true);
  assert.equal(acceptsGzip('br;q=1.0, gzip;q=0.8'), true);
  assert.equal(acceptsGzip('*'), true);
  assert.equal(acceptsGzip('gzip;q=0'), false);
  assert.equal(acceptsGzip('identity'), false);
  assert.equal(acceptsGzip(undefined), false);
});
