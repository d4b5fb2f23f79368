// The API's access rules against a real daemon over real HTTP: every route of the route table but
// /metrics refuses a request without the token or with a wrong one; a foreign Host header and a
// mutating request that is not JSON are refused and change nothing; the read-only token reads only;
// the CLI works with the token from a flag or the environment and says clearly what is missing.
// The daemon runs under umask 000 here, and the files it writes are still private.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, api, peerUp, type DaemonProcess } from '../helpers/daemon.js';
import { runCommand } from '../helpers/in-process-array.js';
import { tidemarkBin } from '../helpers/daemon.js';
import { API_ROUTES } from '../../src/adapters/http/all-routes.js';

const MiB = 1024 * 1024;
let fixture: DaemonFixture;
let daemon: DaemonProcess;

interface ErrorBody { error: { code: string; message: string } }
interface Volume { name: string; state: string; changedTracks: number }

before(async () => {
  // Children inherit it: the daemon must not depend on the umask to keep its files private.
  process.umask(0o000);
  fixture = await DaemonFixture.create();
  daemon = await fixture.start(undefined, ['--api-host', 'Array1.Example']);
  assert.equal((await api(daemon, 'POST', '/v1/volumes', { name: 'keep', sizeBytes: 4 * MiB })).status, 201);
});
after(async () => {
  await fixture.cleanup();
});

/** The route's URL with every path parameter set to an existing volume's name. */
const urlOf = (url: string): string => url.replace(/:[A-Za-z]+/g, 'keep');

/** A raw HTTP/1.1 request, so the Host header is exactly what the test says. */
function raw(method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const { hostname, port } = new URL(daemon.apiUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port: Number(port), method, path, headers, setHost: false, timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body: text, headers: res.headers }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

const volumeKeep = async (): Promise<Volume> => (await api<Volume>(daemon, 'GET', '/v1/volumes/keep')).body;

test('every route but /metrics answers 401 without a token or with a wrong one, and nothing changes', { timeout: 60_000 }, async () => {
  const before = await volumeKeep();
  const wrong = `${daemon.token.slice(0, -1)}${daemon.token.endsWith('A') ? 'B' : 'A'}`;
  let refused = 0;
  for (const route of API_ROUTES) {
    const url = urlOf(route.url);
    for (const authorization of [undefined, `Bearer ${wrong}`, `Bearer ${daemon.token}x`, 'Basic a2VlcDprZWVw', daemon.token]) {
      const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
      // A well-formed request in every other respect, so the token is the only reason to refuse it.
      const response = await api<ErrorBody>(daemon.apiUrl, route.method, url, route.method === 'GET' ? undefined : {}, undefined, headers);
      if (route.public) {
        assert.equal(response.status, 200, `${route.method} ${url} is public`);
        continue;
      }
      assert.equal(response.status, 401, `${route.method} ${url} with ${authorization ?? 'no Authorization'}: ${JSON.stringify(response.body)}`);
      assert.equal(response.body.error.code, 'TM_ERR_UNAUTHORIZED');
      refused++;
    }
  }
  assert.ok(API_ROUTES.filter((r) => r.public).length === 1 && API_ROUTES.find((r) => r.public)!.url === '/metrics', 'only /metrics is public');
  assert.ok(refused >= (API_ROUTES.length - 1) * 5, `${refused} refusals`);
  // Neither the document nor unknown routes say anything without the token.
  for (const path of ['/openapi.json', '/v2/nothing', '/ui/nothing.js']) {
    const response = await raw('GET', path, { host: '127.0.0.1' });
    assert.equal(response.status, 401, path);
    assert.equal(response.headers['www-authenticate'], 'Bearer realm="tidemark"');
    assert.equal((JSON.parse(response.body) as ErrorBody).error.code, 'TM_ERR_UNAUTHORIZED');
  }
  // The dashboard's static files are served without it (a browser's navigation carries no bearer
  // token); they hold no data: the page asks the API, which wants the token, for everything.
  for (const path of ['/', '/ui/app.js', '/ui/app.css']) {
    const response = await raw('GET', path, { host: '127.0.0.1' });
    assert.equal(response.status, 200, path);
    assert.doesNotMatch(response.body, new RegExp(daemon.token), path);
    assert.doesNotMatch(response.body, /"keep"/, `${path} carries no volume data`);
    assert.match(response.headers['content-security-policy'] as string, /default-src 'none'/);
    const elsewhere = await raw('GET', path, { host: 'evil.example' });
    assert.equal(elsewhere.status, 403, `${path}: the Host check still applies`);
  }
  assert.deepEqual(await volumeKeep(), before, 'the unauthenticated DELETE, PUT and POST requests changed nothing');
  assert.deepEqual((await api<{ volumes: Volume[] }>(daemon, 'GET', '/v1/volumes')).body.volumes.map((v) => v.name), ['keep']);
});

test('a Host header the array does not serve is refused (DNS rebinding), on /metrics too', { timeout: 30_000 }, async () => {
  const auth = { authorization: `Bearer ${daemon.token}` };
  const port = new URL(daemon.apiUrl).port;
  for (const host of ['evil.example', `evil.example:${port}`, 'array1.example.evil.example', 'localhost.evil.example']) {
    for (const path of ['/v1/volumes', '/metrics']) {
      const response = await raw('GET', path, { ...auth, host });
      assert.equal(response.status, 403, `${host} ${path}`);
      assert.equal((JSON.parse(response.body) as ErrorBody).error.code, 'TM_ERR_FORBIDDEN');
    }
  }
  const deleted = await raw('DELETE', '/v1/volumes/keep', { ...auth, host: 'evil.example', 'content-type': 'application/json' });
  assert.equal(deleted.status, 403);
  assert.equal((await volumeKeep()).name, 'keep');
  for (const host of [`127.0.0.1:${port}`, '127.0.0.1', `localhost:${port}`, 'LOCALHOST', 'tidemark.localhost', `[::1]:${port}`,
    `array1.example:${port}`, 'ARRAY1.EXAMPLE.']) {
    assert.equal((await raw('GET', '/v1/volumes', { ...auth, host })).status, 200, host);
  }
});

test('a mutating request that is not JSON is refused and changes nothing', { timeout: 30_000 }, async () => {
  const auth = { authorization: `Bearer ${daemon.token}`, host: '127.0.0.1' };
  const body = JSON.stringify({ name: 'evil', sizeBytes: MiB });
  const attempts: Array<[string, string, Record<string, string>, string | undefined]> = [
    ['POST', '/v1/volumes', { 'content-type': 'text/plain' }, body],
    ['POST', '/v1/volumes', { 'content-type': 'application/x-www-form-urlencoded' }, 'name=evil&sizeBytes=1048576'],
    ['POST', '/v1/volumes', { 'content-type': 'multipart/form-data; boundary=x' }, '--x--'],
    ['POST', '/v1/volumes', {}, body],
    ['POST', '/v1/volumes/keep/changes/reset', {}, undefined], // the body-less POST a web page can send
    ['DELETE', '/v1/volumes/keep', {}, undefined],
    ['PUT', '/v1/volumes/keep/state', { 'content-type': 'text/plain' }, JSON.stringify({ state: 'write-disabled' })],
  ];
  for (const [method, path, headers, payload] of attempts) {
    const response = await raw(method, path, { ...auth, ...headers }, payload);
    assert.equal(response.status, 415, `${method} ${path} ${JSON.stringify(headers)}: ${response.body}`);
    assert.equal((JSON.parse(response.body) as ErrorBody).error.code, 'TM_ERR_UNSUPPORTED_MEDIA_TYPE');
  }
  const names = (await api<{ volumes: Volume[] }>(daemon, 'GET', '/v1/volumes')).body.volumes.map((v) => v.name);
  assert.deepEqual(names, ['keep']);
  assert.equal((await volumeKeep()).state, 'ready');
  // The same requests with the JSON type (and an empty body where there is nothing to say) work.
  assert.equal((await raw('POST', '/v1/volumes/keep/changes/reset', { ...auth, 'content-type': 'application/json; charset=utf-8' })).status, 200);
  assert.equal((await api(daemon, 'POST', '/v1/volumes', { name: 'json', sizeBytes: MiB })).status, 201);
  assert.equal((await api(daemon, 'DELETE', '/v1/volumes/json')).status, 200);
});

test('the read-only token reads and cannot change anything', { timeout: 30_000 }, async () => {
  const readToken = (await readFile(join(daemon.dataDir, 'api-token.read'), 'utf8')).trim();
  assert.notEqual(readToken, daemon.token);
  const reader = { apiUrl: daemon.apiUrl, token: readToken };
  assert.equal((await api(reader, 'GET', '/v1/volumes')).status, 200);
  assert.equal((await api(reader, 'GET', '/v1/array')).status, 200);
  const refused = await api<ErrorBody>(reader, 'DELETE', '/v1/volumes/keep');
  assert.equal(refused.status, 403);
  assert.equal(refused.body.error.code, 'TM_ERR_FORBIDDEN');
  assert.equal((await api<ErrorBody>(reader, 'POST', '/v1/volumes', { name: 'no', sizeBytes: MiB })).status, 403);
  assert.equal((await volumeKeep()).name, 'keep');
});

test('the CLI: token from --token-file, TIDEMARK_TOKEN_FILE or TIDEMARK_TOKEN; clear errors without one', { timeout: 60_000 }, async () => {
  const cli = (args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    runCommandWithEnv(tidemarkBin, ['--array', daemon.apiUrl, ...args], env);
  const viaFlag = await cli(['--token-file', daemon.tokenFile, '--json', 'volume', 'create', 'cli', '--size', '1MiB']);
  assert.equal(viaFlag.code, 0, viaFlag.stderr);
  const viaFileEnv = await cli(['--json', 'volume', 'show', 'cli'], { TIDEMARK_TOKEN_FILE: daemon.tokenFile });
  assert.equal(viaFileEnv.code, 0, viaFileEnv.stderr);
  const viaEnv = await cli(['--json', 'volume', 'delete', 'cli'], { TIDEMARK_TOKEN: daemon.token });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);

  const none = await cli(['volume', 'list']);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /requires its API token: pass --token-file DATA\/api-token.*\[TM_ERR_UNAUTHORIZED\]/);
  const wrongFile = join(fixture.dir, 'wrong-token');
  await writeFile(wrongFile, 'not-the-token\n');
  const wrong = await cli(['volume', 'list'], { TIDEMARK_TOKEN_FILE: wrongFile });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /refused the token from TIDEMARK_TOKEN_FILE=.*wrong-token.*\[TM_ERR_UNAUTHORIZED\]/);
  assert.doesNotMatch(wrong.stderr, /not-the-token/, 'a token is never printed');
  const both = await cli(['volume', 'list'], { TIDEMARK_TOKEN_FILE: daemon.tokenFile, TIDEMARK_TOKEN: daemon.token });
  assert.equal(both.code, 1);
  assert.match(both.stderr, /both TIDEMARK_TOKEN_FILE and TIDEMARK_TOKEN are set/);
  const directory = await cli(['--token-file', fixture.dir, 'volume', 'list']);
  assert.equal(directory.code, 1);
  assert.match(directory.stderr, /is not a regular file \[TM_ERR_INVALID_ARGUMENT\]/);
  assert.deepEqual((await api<{ volumes: Volume[] }>(daemon, 'GET', '/v1/volumes')).body.volumes.map((v) => v.name), ['keep']);
});

test('the token survives restarts unchanged; a token file others can read stops the start', { timeout: 60_000 }, async () => {
  const dataDir = join(fixture.dir, 'restart');
  const first = await fixture.start(dataDir);
  assert.equal((await first.stop()).code, 0);
  const second = await fixture.start(dataDir);
  assert.equal(second.token, first.token, 'never overwritten');
  assert.equal((await api(second, 'GET', '/v1/volumes')).status, 200);
  assert.equal((await second.stop()).code, 0);
  const { chmod } = await import('node:fs/promises');
  await chmod(join(dataDir, 'api-token'), 0o644);
  const refused = await fixture.spawnDaemon(dataDir).done;
  assert.equal(refused.code, 1);
  assert.match(refused.output, /api-token is readable or writable by other users \(mode 644\): run chmod 600/);
});

test('files are private whatever the umask: data directory 700, volumes, metadata, tokens 600; secrets never logged', { timeout: 90_000 }, async () => {
  assert.equal(process.umask(), 0o000);
  const east = await fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0']);
  const west = await fixture.start(join(fixture.dir, 'west'), ['--name', 'west', '--link', '127.0.0.1:0']);
  await peerUp(fixture, east, 'east', west, 'west');
  assert.equal((await api(east, 'POST', '/v1/volumes', { name: 'db', sizeBytes: 4 * MiB })).status, 201);
  assert.equal((await api(west, 'POST', '/v1/volumes', { name: 'db-r', sizeBytes: 4 * MiB })).status, 201);
  assert.equal((await api(east, 'POST', '/v1/pairs', { volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync' })).status, 201);

  const mode = async (path: string): Promise<string> => ((await stat(path)).mode & 0o777).toString(8);
  for (const array of [east, west]) {
    assert.equal(await mode(array.dataDir), '700', array.dataDir);
    const files: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) {
          assert.equal(await mode(path), '700', path);
          await walk(path);
        } else {
          files.push(path);
          assert.equal(await mode(path), '600', path);
        }
      }
    };
    await walk(array.dataDir);
    for (const expected of ['api-token', 'api-token.read', join('volumes', array === east ? 'db.vol' : 'db-r.vol'), join('meta', 'peer%2F')]) {
      assert.ok(files.some((f) => f.startsWith(join(array.dataDir, expected))), `${expected}… among ${files.join(', ')}`);
    }
  }
  const secret = (await readFile(join(fixture.dir, 'secret-east-west'), 'utf8'));
  for (const array of [east, west]) {
    const log = array.output();
    assert.ok(log.includes('"peer'), 'the peer was logged');
    for (const form of [secret.trim(), Buffer.from(secret.trim()).toString('base64'), Buffer.from(secret).toString('base64'), array.token]) {
      assert.ok(!log.includes(form), `the log contains a secret (${form.slice(0, 6)}…)`);
    }
  }
});

test('peer add reads the secret only from a regular file of sane size', { timeout: 30_000 }, async () => {
  const dir = join(fixture.dir, 'secrets');
  await mkdir(dir);
  const big = join(dir, 'big');
  await writeFile(big, 'x'.repeat(5000));
  const { execFileSync } = await import('node:child_process');
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const cases: Array<[string, RegExp]> = [
    [dir, /is not a regular file/],
    [fifo, /is not a regular file/],
    ['/dev/zero', /is not a regular file/],
    [big, /is 5000 bytes: a link secret file holds at most 4096/],
    [join(dir, 'missing'), /cannot read the secret file .*missing: ENOENT/],
  ];
  for (const [secretFile, message] of cases) {
    const response = await api<ErrorBody>(daemon, 'POST', '/v1/peers', { name: 'p', address: '127.0.0.1:9', secretFile });
    assert.equal(response.status, 400, secretFile);
    assert.equal(response.body.error.code, 'TM_ERR_INVALID_ARGUMENT');
    assert.match(response.body.error.message, message);
  }
  assert.deepEqual((await api<{ peers: unknown[] }>(daemon, 'GET', '/v1/peers')).body.peers, []);
});

function runCommandWithEnv(command: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { TIDEMARK_TOKEN: _t, TIDEMARK_TOKEN_FILE: _f, TIDEMARK_ARRAY: _a, ...rest } = process.env;
  void _t; void _f; void _a;
  return runCommand(command, args, 30_000, { ...rest, ...env });
}
