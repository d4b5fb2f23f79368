// The cascades panel in a real browser (Debian's chromium through playwright-core) on three real
// daemons: a → b sync, and on b a cascade of the replica to c run on command after its first cycle. b's page shows the
// cascade in its panel and as an edge to c; a cycle is run from the page through the confirmation
// step and completes; the cascade is closed from the page and its panel goes away. No console errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, peerUp, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { requirement } from '../helpers/requirement.js';
import { ARTIFACTS, CHROMIUM, browserTestMissing } from '../helpers/browser.js';

interface CascadeJson { cycles: number; phase: string; requested: boolean; consistentAt: string | null }

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, ...args], 120_000);

test('dashboard in headless Chromium: a cascade in its panel and the topology, cycle now and close with confirmation', { skip: requirement(await browserTestMissing()) }, async () => {
  const { chromium } = await import('playwright-core');
  const fixture = await DaemonFixture.create();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  try {
    const start = (name: string): Promise<DaemonProcess> => fixture.start(join(fixture.dir, name), ['--name', name, '--link', '127.0.0.1:0']);
    const [a, b, c] = await Promise.all([start('a'), start('b'), start('c')]);
    await peerUp(fixture, a, 'a', b, 'b');
    await peerUp(fixture, b, 'b', c, 'c');
    await cli(a, 'volume', 'create', 'db', '--size', '16MiB');
    for (const v of ['db-r', 'db-cl']) await cli(b, 'volume', 'create', v, '--size', '16MiB');
    for (const v of ['db-far', 'db-safe']) await cli(c, 'volume', 'create', v, '--size', '16MiB');
    await cli(a, 'pair', 'create', 'db', '--peer', 'b', '--remote-volume', 'db-r', '--mode', 'sync');
    await cli(a, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    await cli(c, 'clone', 'establish', 'db-far', 'db-safe');
    // No --every: after the first cycle (which creating it starts), cycles run only on command.
    await cli(b, 'cascade', 'create', 'far', '--volume', 'db-r', '--clone', 'db-cl', '--peer', 'c', '--remote-volume', 'db-far', '--remote-clone', 'db-safe');
    await cli(b, 'cascade', 'wait', 'far', '--cycles', '1', '--timeout', '120');

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    let tokenGiven = false;
    const consoleErrors: Array<{ tokenGiven: boolean; text: string }> = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push({ tokenGiven, text: m.text() }); });
    page.on('pageerror', (e) => consoleErrors.push({ tokenGiven, text: `page error: ${e.message}` }));
    assert.equal((await page.goto(b.apiUrl))?.status(), 200);
    await page.getByTestId('token-form').waitFor({ timeout: 15_000 });
    await page.waitForLoadState('networkidle');
    await page.getByTestId('token-input').fill(b.token);
    tokenGiven = true;
    await page.getByRole('button', { name: 'Use token' }).click();

    await page.getByTestId('panel-cascades').waitFor({ timeout: 15_000 });
    await page.getByTestId('cascade-row-far').getByText('db-r → db-cl → c/db-far').waitFor();
    await page.locator('[data-testid="topology-link-c"] [data-testid="topology-cascade-far"]').waitFor();
    assert.equal(await page.getByTestId('panel-journals').count(), 0, 'no journals, no journals panel');
    assert.equal(await page.getByTestId('panel-migrations').count(), 0, 'no migrations or imports, no panel');
    await page.locator('[data-testid="cascade-phase-far"] [data-state="complete"]').waitFor({ timeout: 15_000 });
    const before = Number(await page.getByTestId('cascade-cycles-far').textContent());
    assert.equal(before, 1);
    assert.equal(await page.getByTestId('cascade-row-far').getByText('on command').count(), 1, 'no next cycle is due');

    // Cycle now, with the confirmation: a second cycle runs and completes; the page shows it.
    await page.getByTestId('action-cascade-far-cycle').click();
    await page.getByTestId('confirm').getByText('Run a cycle of cascade far now?').waitFor();
    await page.getByTestId('confirm-yes').click();
    await page.getByTestId('confirm').waitFor({ state: 'detached' });
    const show = async (): Promise<CascadeJson> => JSON.parse(await cli(b, '--json', 'cascade', 'show', 'far')) as CascadeJson;
    await waitFor('the cycle asked for from the page', async () => {
      const now = await show();
      return now.cycles > before && now.phase === 'complete' && !now.requested;
    }, 90_000);
    const done = await show();
    assert.notEqual(done.consistentAt, null);
    await page.getByTestId('cascade-cycles-far').getByText(String(done.cycles), { exact: true }).waitFor({ timeout: 15_000 });
    await page.locator('[data-testid="cascade-phase-far"] [data-state="complete"]').waitFor({ timeout: 15_000 });
    await page.screenshot({ path: join(await mkdir(ARTIFACTS, { recursive: true }).then(() => ARTIFACTS), 'dashboard-cascade.png'), fullPage: true });

    // Close, with the confirmation: the cascade ends and its panel and edge go away.
    await page.getByTestId('action-cascade-far-close').click();
    await page.getByTestId('confirm').getByText('Close cascade far?').waitFor();
    await page.getByTestId('confirm-yes').click();
    await page.getByTestId('panel-cascades').waitFor({ state: 'detached', timeout: 60_000 });
    assert.equal(await page.getByTestId('topology-cascade-far').count(), 0);
    assert.deepEqual((JSON.parse(await cli(b, '--json', 'status')) as { cascades: unknown[] }).cascades, []);

    assert.deepEqual(consoleErrors.filter((e) => e.tokenGiven), [], 'no console errors once the token is given');
    assert.ok(consoleErrors.every((e) => /status of 401/.test(e.text)), `before the token only the 401s: ${JSON.stringify(consoleErrors)}`);
  } finally {
    await browser.close();
    await fixture.cleanup();
  }
});
