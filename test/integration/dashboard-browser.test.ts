// The dashboard in a real browser (Debian's chromium, driven by playwright-core) against two real
// daemons with a sync pair: the operator asks for the token only because the API answered 401,
// sees both arrays and the link, suspends the pair with the confirmation step, sees the state
// change and the event, writes through NBD (qemu-io) and sees owed tracks grow, resumes and sees
// it synchronized again; splits a clone session; a refusal shows the API's message. No console errors; a screenshot is
// kept under test-artifacts/ and the page weight is printed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, peerUp, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { requirement } from '../helpers/requirement.js';
import { ARTIFACTS, CHROMIUM, browserTestMissing } from '../helpers/browser.js';

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, ...args]);

test('dashboard in headless Chromium: topology, suspend with confirmation, owed tracks grow, resume, clone split, refusal', { skip: requirement(await browserTestMissing(['qemu-io'])) }, async () => {
  const { chromium } = await import('playwright-core');
  const fixture = await DaemonFixture.create();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  try {
    const east = await fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0']);
    const west = await fixture.start(join(fixture.dir, 'west'), ['--name', 'west', '--link', '127.0.0.1:0']);
    await peerUp(fixture, east, 'east', west, 'west');
    await cli(east, 'volume', 'create', 'db', '--size', '16MiB');
    await cli(west, 'volume', 'create', 'db-r', '--size', '16MiB');
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    // Which console errors are expected depends on the step: the 401 before the token is given,
    // the refused command at the end. Anything else is a failure.
    let phase = 'token';
    const consoleErrors: Array<{ phase: string; text: string }> = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push({ phase, text: m.text() }); });
    page.on('pageerror', (e) => consoleErrors.push({ phase, text: `page error: ${e.message}` }));
    const response = await page.goto(east.apiUrl);
    assert.equal(response?.status(), 200);
    const csp = response?.headers()['content-security-policy'] ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);

    // The API answered 401: the page asks for the token, keeps it for the tab, and goes on.
    await page.getByTestId('token-form').waitFor({ timeout: 15_000 });
    await page.waitForLoadState('networkidle'); // every request made without the token has had its 401
    await page.getByTestId('token-input').fill(east.token);
    phase = 'dashboard';
    await page.getByRole('button', { name: 'Use token' }).click();
    assert.equal(await page.evaluate('sessionStorage.getItem("tidemark-api-token")'), east.token);

    // Topology: both arrays and the link up; the pair synchronized.
    await page.getByTestId('topology-array-east').waitFor({ timeout: 15_000 });
    await page.getByTestId('topology-array-west').waitFor();
    await page.locator('[data-testid="topology-link-west"][data-link="up"]').waitFor({ timeout: 15_000 });
    await page.getByTestId('topology-pair-db').waitFor();
    const stateBadge = (state: string) => page.locator(`[data-testid="pair-state-db"] [data-state="${state}"]`);
    await stateBadge('synchronized').waitFor({ timeout: 15_000 });

    // Page weight of the first load: the page and its assets, then the API answers it asked for.
    // (A string: the test is compiled without the DOM's types.)
    const entries = await page.evaluate(`[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
      .map((e) => ({ name: e.name, transfer: e.transferSize, body: e.decodedBodySize }))`) as Array<{ name: string; transfer: number; body: number }>;
    const isStatic = (name: string): boolean => !name.includes('/v1/');
    const staticBytes = entries.filter((e) => isStatic(e.name)).reduce((sum, e) => sum + e.transfer, 0);
    const staticDecoded = entries.filter((e) => isStatic(e.name)).reduce((sum, e) => sum + e.body, 0);
    const apiBytes = entries.filter((e) => !isStatic(e.name)).reduce((sum, e) => sum + e.transfer, 0);
    console.log(`dashboard page weight (first load): ${staticBytes} bytes transferred for the page, script and style ` +
      `(${staticDecoded} bytes uncompressed), plus ${apiBytes} bytes of API answers so far`);
    assert.ok(staticBytes > 0 && staticBytes < 150_000, `page weight ${staticBytes} bytes`);

    // Suspend, with the confirmation step (cancel first: nothing happens).
    await page.getByTestId('action-db-suspend').click();
    await page.getByTestId('confirm').waitFor();
    await page.getByTestId('confirm-no').click();
    await page.getByTestId('confirm').waitFor({ state: 'detached' });
    assert.equal(JSON.parse(await cli(east, '--json', 'pair', 'show', 'db')).state, 'synchronized', 'cancel sends nothing');
    await page.getByTestId('action-db-suspend').click();
    await page.getByTestId('confirm').getByText('Suspend pair db?').waitFor();
    await page.getByTestId('confirm-yes').click();
    await stateBadge('suspended').waitFor({ timeout: 15_000 });
    await page.locator('[data-testid="event"][data-kind="pair"]', { hasText: 'pair suspend' }).waitFor({ timeout: 15_000 });
    await page.locator('[data-testid="event"]', { hasText: 'pair db: synchronized → suspended' }).waitFor({ timeout: 15_000 });

    // A host writes 1 MiB through NBD: 16 tracks owed.
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 5 2M 1M', east.uri('db')]);
    await page.locator('[data-testid="pair-owed-db"][data-tracks="16"]').waitFor({ timeout: 15_000 });

    // Resume: back to synchronized, nothing owed.
    await page.getByTestId('action-db-resume').click();
    await page.getByTestId('confirm-yes').click();
    await stateBadge('synchronized').waitFor({ timeout: 30_000 });
    await page.locator('[data-testid="pair-owed-db"][data-tracks="0"]').waitFor({ timeout: 15_000 });
    await page.locator('[data-testid="event"]', { hasText: 'pair db: suspended →' }).first().waitFor({ timeout: 15_000 });
    // A clone session: its progress and state in the volumes panel, split from the page.
    await cli(east, 'volume', 'create', 'snap', '--size', '16MiB');
    await cli(east, 'clone', 'establish', 'db', 'snap');
    await page.locator('[data-testid="clone-db-snap"] [data-state="synchronized"]').waitFor({ timeout: 30_000 });
    await page.getByTestId('action-db-snap-split').click();
    await page.getByTestId('confirm').getByText('Split snap from db?').waitFor();
    await page.getByTestId('confirm-yes').click();
    await page.locator('[data-testid="clone-db-snap"] [data-state="split"]').waitFor({ timeout: 15_000 });
    await page.locator('[data-testid="event"][data-kind="clone"]', { hasText: 'clone session db/snap: synchronized → split' }).waitFor({ timeout: 15_000 });
    assert.equal(JSON.parse(await cli(east, '--json', 'clone', 'show', 'db', 'snap')).state, 'split');
    await page.getByTestId('peer-rtt-west').getByText(/^rtt \d+(\.\d+)? ms$/).waitFor({ timeout: 20_000 });
    await page.screenshot({ path: join(await mkdir(ARTIFACTS, { recursive: true }).then(() => ARTIFACTS), 'dashboard.png'), fullPage: true });
    assert.deepEqual(consoleErrors.filter((e) => e.phase !== 'token'), [], 'no console errors once the token is given');
    assert.ok(consoleErrors.every((e) => /status of 401/.test(e.text)), `before the token only the 401s: ${JSON.stringify(consoleErrors)}`);

    // West goes away: the link shows down, and a failover given on R1 is refused with the API's message.
    await west.stop('SIGKILL');
    await page.locator('[data-testid="topology-link-west"][data-link="down"]').waitFor({ timeout: 20_000 });
    await page.locator('[data-testid="event"][data-kind="link"]', { hasText: 'link to west down' }).waitFor({ timeout: 15_000 });
    phase = 'refusal';
    await page.getByTestId('action-db-failover').click();
    await page.getByTestId('confirm-yes').click();
    await page.getByTestId('refusal').getByText(/link to R2 \(west\) is down/).waitFor({ timeout: 15_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-refusal.png'), fullPage: true });
    await page.getByTestId('confirm-no').click();
    assert.deepEqual(consoleErrors.filter((e) => e.phase === 'refusal' && !/status of 503/.test(e.text)), [], 'the refusal is the only error');
    assert.notEqual(JSON.parse(await cli(east, '--json', 'pair', 'show', 'db')).state, 'failed-over');
  } finally {
    await browser.close();
    await fixture.cleanup();
  }
});
