// Routed commands between three real daemons (separate processes, authenticated TCP links):
// alpha — bravo — charlie, alpha not a peer of charlie. Every command goes through the real CLI
// with --via, and its output is compared with the same command given to the answering array
// directly: one hop, two hops, mutations, a wait that polls, errors with their codes, and the
// route's own refusals (a hop that is not a peer, loops, a token that may not).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DaemonFixture, peerUp, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

let fixture: DaemonFixture;
let alpha: DaemonProcess;
let bravo: DaemonProcess;
let charlie: DaemonProcess;

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);
const via = (hops: string, ...args: string[]): Promise<string> => cli(alpha, '--via', hops, ...args);
const attempt = (array: DaemonProcess, ...args: string[]): ReturnType<typeof runCommand> => runCommand(tidemarkBin, [...array.cliArgs, ...args]);

before(async () => {
  fixture = await DaemonFixture.create();
  const start = (name: string): Promise<DaemonProcess> => fixture.start(join(fixture.dir, name), ['--name', name, '--link', '127.0.0.1:0']);
  [alpha, bravo, charlie] = await Promise.all([start('alpha'), start('bravo'), start('charlie')]);
  await peerUp(fixture, alpha, 'alpha', bravo, 'bravo');
  await peerUp(fixture, bravo, 'bravo', charlie, 'charlie');
});

after(async () => {
  await fixture?.cleanup();
});

test('one hop and two hops answer exactly what the far array answers directly (alpha is no peer of charlie)', { timeout: 120_000 }, async () => {
  const peersOfAlpha = JSON.parse(await cli(alpha, 'peer', 'list')) as { peers: Array<{ name: string }> };
  assert.deepEqual(peersOfAlpha.peers.map((p) => p.name), ['bravo'], 'alpha knows bravo only');

  assert.equal(JSON.parse(await via('bravo', 'array', 'show')).name, 'bravo');
  assert.equal(JSON.parse(await via('bravo,charlie', 'array', 'show')).name, 'charlie');
  // TIDEMARK_VIA does what --via does; --via wins over it.
  const env = { ...process.env, TIDEMARK_VIA: 'bravo,charlie' };
  const fromEnv = await runCommand(tidemarkBin, [...alpha.cliArgs, '--json', 'array', 'show'], 60_000, env);
  assert.equal(JSON.parse(fromEnv.stdout).name, 'charlie', fromEnv.stderr);
  const overridden = await runCommand(tidemarkBin, [...alpha.cliArgs, '--json', '--via', 'bravo', 'array', 'show'], 60_000, env);
  assert.equal(JSON.parse(overridden.stdout).name, 'bravo', overridden.stderr);

  // A mutation two hops away, then its result read directly and through the route.
  const created = await via('bravo,charlie', 'volume', 'create', 'far', '--size', '4M');
  assert.equal(JSON.parse(created).name, 'far');
  assert.equal(await via('bravo,charlie', 'volume', 'list'), await cli(charlie, 'volume', 'list'), 'two hops: --json output identical');
  assert.equal(await via('bravo,charlie', 'volume', 'show', 'far'), await cli(charlie, 'volume', 'show', 'far'));
  // Peer lists carry live byte counters (the route's own traffic moves them): compared without those.
  const still = (json: string): unknown => (JSON.parse(json) as { peers: Array<Record<string, unknown>> }).peers
    .map(({ bytesSent: _s, bytesReceived: _r, ...rest }) => rest);
  assert.deepEqual(still(await via('bravo', 'peer', 'list')), still(await cli(bravo, 'peer', 'list')), 'one hop: the same answer');
  assert.equal(await via('bravo', 'volume', 'list'), await cli(bravo, 'volume', 'list'), 'one hop: --json output identical');
  assert.deepEqual((JSON.parse(await cli(alpha, 'volume', 'list')) as { volumes: unknown[] }).volumes, [], 'nothing was created on alpha');
  assert.deepEqual((JSON.parse(await cli(bravo, 'volume', 'list')) as { volumes: unknown[] }).volumes, [], 'nor on bravo');

  // Human output is the same too (the route changes nothing in the answer).
  const human = await mustRun(tidemarkBin, [...alpha.cliArgs, '--via', 'bravo,charlie', 'volume', 'list']);
  assert.equal(human, await mustRun(tidemarkBin, [...charlie.cliArgs, 'volume', 'list']));

  // The executing array keeps an audit line naming the way the command came.
  const audit = charlie.output().split('\n').filter((l) => l.includes('"routed request executed"')).map((l) => JSON.parse(l) as { trail: string[]; method: string; path: string });
  assert.ok(audit.some((a) => a.method === 'POST' && a.path === '/v1/volumes' && a.trail.join(',') === 'alpha,bravo'), 'charlie logged the routed create with its trail');
});

test('pair and clone commands and their waits work through the route', { timeout: 180_000 }, async () => {
  await via('bravo', 'volume', 'create', 'db', '--size', '8M');
  await via('bravo,charlie', 'volume', 'create', 'db-r', '--size', '8M');
  await via('bravo', 'pair', 'create', 'db', '--peer', 'charlie', '--remote-volume', 'db-r', '--mode', 'sync');
  // `wait` polls: every poll travels the route.
  const waited = JSON.parse(await via('bravo', 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60')) as { state: string };
  assert.equal(waited.state, 'synchronized');
  const r2 = JSON.parse(await via('bravo,charlie', 'pair', 'show', 'db')) as { role: string; state: string };
  assert.equal(r2.role, 'R2');

  await via('bravo', 'volume', 'create', 'db-clone', '--size', '8M');
  await via('bravo', 'clone', 'establish', 'db', 'db-clone');
  const clone = JSON.parse(await via('bravo', 'clone', 'wait', 'db', 'db-clone', '--until', 'synchronized', '--timeout', '60')) as { state: string };
  assert.equal(clone.state, 'synchronized');
  await via('bravo', 'clone', 'split', 'db', 'db-clone');
  assert.equal((JSON.parse(await cli(bravo, 'clone', 'show', 'db', 'db-clone')) as { state: string }).state, 'split');
});

test('a command that fails on the far array returns its own TM_ERR code and message through the route', { timeout: 60_000 }, async () => {
  const direct = await attempt(charlie, '--json', 'volume', 'show', 'nope');
  const routed = await attempt(alpha, '--json', '--via', 'bravo,charlie', 'volume', 'show', 'nope');
  assert.notEqual(routed.code, 0);
  assert.equal(routed.code, direct.code);
  assert.match(routed.stderr, /TM_ERR_NOT_FOUND/);
  assert.equal(routed.stderr, direct.stderr, 'the same error, word for word');
  // Validation runs on the far array too, with its answer.
  const bad = await attempt(alpha, '--via', 'bravo,charlie', 'volume', 'create', 'x', '--size', '3');
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /TM_ERR_/);
});

test('the route itself refuses a hop that is not a peer, loops and over-long routes, naming the culprit', { timeout: 60_000 }, async () => {
  const notPeer = await attempt(alpha, '--via', 'charlie', 'volume', 'list');
  assert.notEqual(notPeer.code, 0);
  assert.match(notPeer.stderr, /alpha has no peer named charlie/);
  assert.match(notPeer.stderr, /TM_ERR_ROUTE_REFUSED/);

  const farNotPeer = await attempt(alpha, '--via', 'bravo,delta', 'volume', 'list');
  assert.match(farNotPeer.stderr, /bravo has no peer named delta/);
  assert.match(farNotPeer.stderr, /TM_ERR_ROUTE_REFUSED/);

  for (const loop of ['bravo,alpha', 'bravo,charlie,bravo', 'alpha']) {
    const r = await attempt(alpha, '--via', loop, 'volume', 'list');
    assert.notEqual(r.code, 0, loop);
    assert.match(r.stderr, /routing loop/, loop);
    assert.match(r.stderr, /TM_ERR_ROUTE_REFUSED/, loop);
  }
  const long = await attempt(alpha, '--via', 'b1,b2,b3,b4,b5,b6,b7,b8,b9', 'volume', 'list');
  assert.match(long.stderr, /at most 8 hops/);
  const bad = await attempt(alpha, '--via', 'bravo,,charlie', 'volume', 'list');
  assert.match(bad.stderr, /TM_ERR_INVALID_ARGUMENT/);
  // None of it reached charlie.
  assert.ok(!charlie.output().includes('"routed request refused"'), 'refusals happen before the route reaches the far array');
});

test('HTTP: /v1/via/… answers with the far array\'s status and body and names who answered; tokens are checked at the origin', { timeout: 60_000 }, async () => {
  const get = (target: DaemonProcess, path: string, token = target.token, init: RequestInit = {}): Promise<Response> =>
    fetch(`${target.apiUrl}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) }, signal: AbortSignal.timeout(20_000) });
  const routed = await get(alpha, '/v1/via/bravo,charlie/v1/volumes');
  const direct = await get(charlie, '/v1/volumes');
  assert.equal(routed.status, 200);
  assert.equal(routed.headers.get('tidemark-answered-by'), 'charlie');
  assert.equal(routed.headers.get('tidemark-route'), 'alpha,bravo,charlie');
  assert.equal(await routed.text(), await direct.text());
  // Any path of the far array's API, even one this array would not have: the far array routes it.
  const doc = await get(alpha, '/v1/via/bravo/openapi.json');
  assert.equal(await doc.text(), await (await get(bravo, '/openapi.json')).text());
  // Query strings travel with the request (a bad one is refused there, as it is directly).
  const changes = await get(alpha, '/v1/via/bravo,charlie/v1/volumes/far/changes?maxRuns=0');
  const directChanges = await get(charlie, '/v1/volumes/far/changes?maxRuns=0');
  assert.equal(directChanges.status, 400);
  assert.equal(changes.status, 400);
  assert.equal(await changes.text(), await directChanges.text());
  assert.equal((await get(alpha, '/v1/via/bravo,charlie/v1/volumes/far/changes?maxRuns=1')).status, 200);

  // The origin's token decides: none → 401, another array's → 401, read-only → GET only.
  assert.equal((await fetch(`${alpha.apiUrl}/v1/via/bravo/v1/volumes`, { signal: AbortSignal.timeout(5000) })).status, 401);
  assert.equal((await get(alpha, '/v1/via/bravo/v1/volumes', bravo.token)).status, 401, 'bravo\'s token means nothing to alpha');
  const readToken = (await import('node:fs/promises')).readFile(join(alpha.dataDir, 'api-token.read'), 'utf8');
  const read = (await readToken).trim();
  assert.equal((await get(alpha, '/v1/via/bravo/v1/volumes', read)).status, 200);
  const refused = await get(alpha, '/v1/via/bravo/v1/volumes', read,
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'sneaky', sizeBytes: 1048576 }) });
  assert.equal(refused.status, 403);
  assert.equal((await get(bravo, '/v1/volumes/sneaky')).status, 404, 'nothing was created');
  // A route that names routes inside it is refused (it would escape the loop checks).
  const nested = await get(alpha, '/v1/via/bravo/v1/via/charlie/v1/volumes');
  assert.equal(nested.status, 400);
  assert.match(await nested.text(), /TM_ERR_ROUTE_REFUSED/);
});

test('a hop whose link is down fails with TM_ERR_LINK_DOWN naming it; the route works again when it is back', { timeout: 120_000 }, async () => {
  const charlieDir = charlie.dataDir;
  await charlie.stop('SIGKILL');
  const down = await attempt(alpha, '--via', 'bravo,charlie', 'volume', 'list');
  assert.notEqual(down.code, 0);
  assert.match(down.stderr, /charlie/);
  assert.match(down.stderr, /TM_ERR_LINK_DOWN/);
  // Back, this time reading only for routed commands.
  charlie = await fixture.start(charlieDir, ['--name', 'charlie', '--link', charlie.linkAddress!, '--routed-commands', 'read-only']);
  const { waitFor } = await import('../helpers/daemon.js');
  await waitFor('route to charlie', async () => (await attempt(alpha, '--json', '--via', 'bravo,charlie', 'array', 'show')).code === 0, 30_000);
  assert.equal(JSON.parse(await via('bravo,charlie', 'array', 'show')).name, 'charlie');
  const refused = await attempt(alpha, '--via', 'bravo,charlie', 'volume', 'create', 'not-here', '--size', '1M');
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /charlie accepts only reading routed commands \(GET\), not POST/);
  assert.match(refused.stderr, /TM_ERR_FORBIDDEN/);
  assert.ok(!(await cli(charlie, 'volume', 'list')).includes('not-here'), 'nothing created');
  // Its own operator still does everything directly.
  await cli(charlie, 'volume', 'create', 'here', '--size', '1M');
});
