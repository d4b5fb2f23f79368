// The dashboard's panels for the newer kinds of object, in a real browser (Debian's chromium through
// playwright-core) against two real daemons: a journal east → west written through NBD, a migration
// waiting for its manual cutover and an import still copying from west's export. The panels show
// them (and the cascades panel is absent: there are none), the topology draws a peer reached
// through a relay and the journal pair, the migration is cut over from the page
// through the confirmation step, no console errors; the page weight is printed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, peerUp, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { requirement } from '../helpers/requirement.js';
import { ARTIFACTS, CHROMIUM, browserTestMissing } from '../helpers/browser.js';

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, ...args]);

test('dashboard in headless Chromium: journal, migration and import panels; cutover with confirmation', { skip: requirement(await browserTestMissing(['qemu-io'])) }, async () => {
  const { chromium } = await import('playwright-core');
  const fixture = await DaemonFixture.create();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  try {
    const secret = join(fixture.dir, 'secret');
    await writeFile(secret, 'a shared secret of more than sixteen bytes\n', { mode: 0o600 });
    const east = await fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0']);
    const west = await fixture.start(join(fixture.dir, 'west'), ['--name', 'west', '--link', '127.0.0.1:0']);
    await peerUp(fixture, east, 'east', west, 'west');
    // north is west's peer, and east's through west as a relay.
    const north = await fixture.start(join(fixture.dir, 'north'), ['--name', 'north', '--link', '127.0.0.1:0']);
    await peerUp(fixture, west, 'west', north, 'north');
    await cli(east, 'peer', 'add', 'north', '--via', 'west', '--secret-file', secret);
    await cli(north, 'peer', 'add', 'east', '--via', 'west', '--secret-file', secret);
    // A journal east → west.
    await cli(east, 'journal', 'create', 'orders');
    await cli(east, 'volume', 'create', 'log', '--size', '16MiB');
    await cli(west, 'volume', 'create', 'log-r', '--size', '16MiB');
    await cli(east, 'pair', 'create', 'log', '--peer', 'west', '--remote-volume', 'log-r', '--mode', 'journal', '--journal', 'orders');
    // A migration that copies at once and then waits for its cutover.
    await cli(east, 'volume', 'create', 'mig', '--size', '16MiB');
    await cli(east, 'volume', 'create', 'mig-new', '--size', '16MiB');
    await cli(east, 'migration', 'start', 'mig', '--to', 'mig-new', '--manual-cutover');
    // An import of west's export, slowed so it is still copying while the page looks.
    await cli(west, 'volume', 'create', 'src', '--size', '64MiB');
    await cli(east, 'import', 'start', 'imp', '--from', west.uri('src'), '--max-rate', '256KiB');

    const page = await browser.newPage({ viewport: { width: 1280, height: 1200 } });
    let tokenGiven = false;
    const consoleErrors: Array<{ tokenGiven: boolean; text: string }> = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push({ tokenGiven, text: m.text() }); });
    page.on('pageerror', (e) => consoleErrors.push({ tokenGiven, text: `page error: ${e.message}` }));
    assert.equal((await page.goto(east.apiUrl))?.status(), 200);
    await page.getByTestId('token-form').waitFor({ timeout: 15_000 });
    await page.waitForLoadState('networkidle');
    await page.getByTestId('token-input').fill(east.token);
    tokenGiven = true;
    await page.getByRole('button', { name: 'Use token' }).click();

    // The panels of the kinds this array has, and not of those it has none of.
    await page.getByTestId('panel-journals').waitFor({ timeout: 15_000 });
    await page.getByTestId('panel-migrations').waitFor();
    assert.equal(await page.getByTestId('panel-cascades').count(), 0, 'no cascades, no cascades panel');

    // Topology: north reached through west (its link and an arc from the relay), the journal pair an edge to west.
    await page.locator('[data-testid="topology-link-north"][data-via="west"][data-link="up"]').waitFor({ timeout: 30_000 });
    await page.getByTestId('topology-relay-west-north').waitFor();
    await page.getByTestId('peer-via-north').getByText('via west').waitFor();
    await page.locator('[data-testid="topology-link-west"] [data-testid="topology-journal-orders.log.west"]').waitFor();

    const entries = await page.evaluate(`[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
      .map((e) => ({ name: e.name, transfer: e.transferSize, body: e.decodedBodySize }))`) as Array<{ name: string; transfer: number; body: number }>;
    const isStatic = (name: string): boolean => !name.includes('/v1/');
    const staticBytes = entries.filter((e) => isStatic(e.name)).reduce((sum, e) => sum + e.transfer, 0);
    const staticDecoded = entries.filter((e) => isStatic(e.name)).reduce((sum, e) => sum + e.body, 0);
    console.log(`dashboard page weight (first load): ${staticBytes} bytes transferred for the page, script and style (${staticDecoded} bytes uncompressed)`);
    assert.ok(staticBytes > 0 && staticBytes < 150_000, `page weight ${staticBytes} bytes`);

    // The journal: east is its sequencer and primary, west a member whose link is up; a host write
    // is numbered and sent, and the page follows the sequence.
    await page.getByTestId('journal-orders').getByText('sequencer · primary').waitFor();
    await page.locator('[data-testid="journal-orders"] [data-testid="journal-member-west"] [data-state="up"]').first().waitFor({ timeout: 15_000 });
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 256k', east.uri('log')]);
    const shown = JSON.parse(await cli(east, '--json', 'journal', 'show', 'orders')) as { sequence: { issued: number | null; sent: number | null } };
    assert.ok((shown.sequence.issued ?? 0) > 0, `the write was numbered: ${JSON.stringify(shown.sequence)}`);
    await waitFor('the page to show the write sent', async () =>
      Number(await page.getByTestId('journal-sent-orders').getAttribute('data-seq')) >= shown.sequence.issued!, 15_000);

    // The import is still copying: tracks left, and no finish offered before it is copied.
    await page.locator('[data-testid="import-state-imp"] [data-state="copying"]').waitFor({ timeout: 15_000 });
    const left = Number(await page.getByTestId('import-left-imp').getAttribute('data-tracks'));
    assert.ok(left > 0, `import tracks left ${left}`);
    assert.equal(await page.getByTestId('action-import-imp-finish').count(), 0);

    // The migration copied everything and waits: cut it over from the page (cancel first: nothing is sent).
    await page.locator('[data-testid="migration-left-mig"][data-tracks="0"]').waitFor({ timeout: 30_000 });
    await page.getByTestId('action-migration-mig-cutover').click();
    await page.getByTestId('confirm-no').click();
    await page.getByTestId('confirm').waitFor({ state: 'detached' });
    assert.equal(JSON.parse(await cli(east, '--json', 'migration', 'show', 'mig')).state, 'copying', 'cancel sends nothing');
    await page.getByTestId('action-migration-mig-cutover').click();
    await page.getByTestId('confirm').getByText('Cut mig over?').waitFor();
    await page.getByTestId('confirm-yes').click();
    await page.locator('[data-testid="migration-state-mig"] [data-state="cut-over"]').waitFor({ timeout: 15_000 });
    assert.equal(JSON.parse(await cli(east, '--json', 'migration', 'show', 'mig')).state, 'cut-over');
    await page.getByTestId('action-migration-mig-detach').waitFor();
    await page.getByTestId('action-migration-mig-finish').waitFor();

    // `tidemark status` shows the same objects, as JSON and on screen.
    const status = JSON.parse(await cli(east, '--json', 'status')) as {
      journals: Array<{ name: string; members: Array<{ array: string; link: string }> }>; migrations: Array<{ volume: string; state: string }>;
      imports: Array<{ name: string; state: string; tracksLeft: number }>; cascades: unknown[]; links: Array<{ peer: string; via: string | null }>;
    };
    assert.deepEqual(status.journals.map((j) => [j.name, j.members]), [['orders', [{ array: 'west', link: 'up' }]]]);
    assert.deepEqual(status.migrations.map((m) => [m.volume, m.state]), [['mig', 'cut-over']]);
    assert.equal(status.imports[0]?.name, 'imp');
    assert.deepEqual(status.cascades, []);
    assert.deepEqual(status.links.map((l) => [l.peer, l.via]), [['north', 'west'], ['west', null]]);
    const screen = await cli(east, 'status');
    assert.match(screen, /^orders +sequencer,primary /m);
    assert.match(screen, /^migration +mig +cut-over /m);
    assert.match(screen, /^import +imp +(copying|copied) /m);

    await page.screenshot({ path: join(await mkdir(ARTIFACTS, { recursive: true }).then(() => ARTIFACTS), 'dashboard-kinds.png'), fullPage: true });
    assert.deepEqual(consoleErrors.filter((e) => e.tokenGiven), [], 'no console errors once the token is given');
    assert.ok(consoleErrors.every((e) => /status of 401/.test(e.text)), `before the token only the 401s: ${JSON.stringify(consoleErrors)}`);
  } finally {
    await browser.close();
    await fixture.cleanup();
  }
});
