// An exception nothing caught, in a real daemon: it is logged with its context and the daemon exits
// with 70 at once; restarted, the array comes back from its durable state. The fault is injected
// from outside the product: a module preloaded with NODE_OPTIONS=--import throws (or rejects) from
// a timer once the test creates a trigger file, so the daemon carries no test hook.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DaemonFixture, api } from '../helpers/daemon.js';
import { EXIT_UNEXPECTED_FAULT } from '../../src/app/fault-policy.js';

const MiB = 1024 * 1024;
let fixture: DaemonFixture;
let injector: string;

const INJECTOR = `
import { existsSync, readFileSync } from 'node:fs';
const trigger = process.env.INJECTED_FAULT_TRIGGER;
const timer = setInterval(() => {
  if (!trigger || !existsSync(trigger)) return;
  clearInterval(timer);
  if (readFileSync(trigger, 'utf8') === 'reject') void Promise.reject(new Error('injected rejection'));
  else throw Object.assign(new Error('injected fault'), { code: 'E_INJECTED' });
}, 20);
timer.unref();
`;

before(async () => {
  fixture = await DaemonFixture.create();
  injector = join(fixture.dir, 'inject-fault.mjs');
  await writeFile(injector, INJECTOR);
});
after(async () => {
  await fixture.cleanup();
});

for (const kind of ['uncaughtException', 'unhandledRejection'] as const) {
  test(`${kind}: logged with context, the daemon exits ${EXIT_UNEXPECTED_FAULT}, and restarts from its durable state`, { timeout: 60_000 }, async () => {
    const dataDir = join(fixture.dir, kind);
    const trigger = join(fixture.dir, `trigger-${kind}`);
    const env = { ...process.env, NODE_OPTIONS: `--import=${pathToFileURL(injector).href}`, INJECTED_FAULT_TRIGGER: trigger };
    const daemon = await fixture.start(dataDir, [], env);
    assert.equal((await api(daemon, 'POST', '/v1/volumes', { name: 'kept', sizeBytes: 4 * MiB })).status, 201);
    // Renamed into place: the injector must never read a half-written trigger.
    await writeFile(`${trigger}.tmp`, kind === 'unhandledRejection' ? 'reject' : 'throw');
    await rename(`${trigger}.tmp`, trigger);
    const exit = await daemon.stop('SIGCONT'); // a harmless signal: only waits for the exit the fault causes
    assert.equal(exit.code, EXIT_UNEXPECTED_FAULT, daemon.output());
    const fatal = daemon.output().split('\n').filter((l) => l.includes('"level":60')).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(fatal.length, 1, daemon.output());
    const line = fatal[0]!;
    assert.equal(line.fault, kind);
    assert.equal(line.err, kind === 'unhandledRejection' ? 'injected rejection' : 'injected fault');
    assert.match(String(line.stack), /inject-fault\.mjs/);
    assert.equal(line.phase, 'running');
    assert.equal(line.data, dataDir);
    assert.equal(line.exitCode, EXIT_UNEXPECTED_FAULT);
    if (kind === 'uncaughtException') assert.equal(line.code, 'E_INJECTED');
    assert.doesNotMatch(daemon.output(), /array stopped cleanly/, 'no clean shutdown on top of an unknown state');

    const again = await fixture.start(dataDir);
    assert.deepEqual((await api<{ volumes: Array<{ name: string }> }>(again, 'GET', '/v1/volumes')).body.volumes.map((v) => v.name), ['kept']);
    assert.equal((await again.stop()).code, 0);
  });
}
