// tidemark cascade …: cascade sessions to a third site (SPEC §7): create, cycle, show, list, close, wait.
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { formatSize } from './sizes.js';
import { printFields, printJson, printTable, type GlobalOptions } from './output.js';
import { waitWithProgress } from './wait.js';
import { ErrorCode, TidemarkError, invalidArgument } from '../core/errors.js';
import type { CascadeView } from '../adapters/http/cascade-routes.js';

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

const path = (name: string): string => `/v1/cascades/${encodeURIComponent(name)}`;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `1s`, `500ms`, `5m`, `1h` (a bare number is seconds). */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw invalidArgument(`--every: ${JSON.stringify(text)} is not a duration like 500ms, 1s, 5m or 1h`);
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!);
}

const every = (ms: number | null): string => (ms === null ? 'on command' : ms % 1000 === 0 ? `every ${ms / 1000} s` : `every ${ms} ms`);

function showCascade(c: CascadeView): void {
  printFields([
    ['cascade', c.name], ['from', `${c.volume} via clone ${c.clone}`], ['to', `${c.peer}:${c.remoteVolume} (complete image kept in ${c.remoteClone})`],
    ['schedule', every(c.everyMs)], ['phase', c.phase + (c.busy ? ` (${c.busy})` : '')], ['cycles', c.cycles],
    ['far site holds', c.consistentAt === null ? 'no complete image yet' : `${c.volume} as of ${c.consistentAt}`],
    ...(c.splitAt ? [['shipping image of', c.splitAt] as [string, string]] : []),
    ...(c.phase === 'shipping' || c.phase === 'refreshing' ? [['this cycle', `${c.tracksShipping} tracks, ${formatSize(c.bytesShippingCycle)} shipped so far`] as [string, string]] : []),
    ['last cycle', `${c.tracksShippedLast} tracks, ${formatSize(c.bytesShippedLast)}`], ['shipped in all', formatSize(c.bytesShipped)],
    ['next cycle', c.nextDueAt ?? (c.phase === 'complete' ? (c.closing ? 'none: closing' : 'on command') : 'after this one')],
    ['source', c.sourceSettled ? 'settled' : 'not confirmed (a resync may be under way)'],
    ...(c.waitingFor ? [['waiting for', c.waitingFor] as [string, string]] : []),
    ...(c.lastError ? [['last error', c.lastError] as [string, string]] : []),
  ]);
}

export function registerCascadeCommands(program: Command, run: (action: Run) => Promise<void>): void {
  const cascade = program.command('cascade').description('cascade sessions: ship consistent images of a volume to a third site, changed tracks only');

  cascade.command('create <name>')
    .description('start a cascade on this (middle) array: CLONE alternately copies VOLUME and ships its split image to PEER')
    .requiredOption('--volume <r2vol>', 'the volume to cascade (usually the R2 of a sync pair)')
    .requiredOption('--clone <cvol>', "an existing volume of VOLUME's size on this array (not exported)")
    .requiredOption('--peer <array>', 'the far array')
    .requiredOption('--remote-volume <crvol>', 'the volume on the far array (same size)')
    .requiredOption('--remote-clone <cprot>', 'a clone session CRVOL→CPROT on the far array that keeps the last complete image')
    .option('--every <duration>', 'run a cycle this often (500ms, 1s, 5m…); without it, only `cascade cycle` runs one')
    .action((name: string, opts: { volume: string; clone: string; peer: string; remoteVolume: string; remoteClone: string; every?: string }) =>
      run(async (client, globals) => {
        const body = {
          name, volume: opts.volume, clone: opts.clone, peer: opts.peer, remoteVolume: opts.remoteVolume, remoteClone: opts.remoteClone,
          ...(opts.every !== undefined ? { everyMs: parseDuration(opts.every) } : {}),
        };
        const c = await client.request<CascadeView>('POST', '/v1/cascades', body);
        if (globals.json) printJson(c);
        else process.stdout.write(`created cascade ${c.name}: ${c.volume} → ${c.peer}:${c.remoteVolume}, ${every(c.everyMs)}\n`);
      }));

  cascade.command('cycle <name>')
    .description('run a cycle now (or right after the one under way)')
    .action((name: string) => run(async (client, globals) => {
      const c = await client.request<CascadeView>('POST', `${path(name)}/cycle`, {});
      if (globals.json) printJson(c);
      else process.stdout.write(`cascade ${name}: cycle requested (phase ${c.phase}, ${c.cycles} completed)\n`);
    }));

  cascade.command('show <name>')
    .description('one session: phase, cycles, the image the far site holds, bytes shipped')
    .action((name: string) => run(async (client, globals) => {
      const c = await client.request<CascadeView>('GET', path(name));
      if (globals.json) printJson(c);
      else showCascade(c);
    }));

  cascade.command('list')
    .description('the cascade sessions of this array')
    .action(() => run(async (client, globals) => {
      const { cascades } = await client.request<{ cascades: CascadeView[] }>('GET', '/v1/cascades');
      if (globals.json) return printJson({ cascades });
      printTable(['NAME', 'VOLUME', 'TO', 'PHASE', 'CYCLES', 'CONSISTENT AT', 'LAST CYCLE'],
        cascades.map((c) => [c.name, c.volume, `${c.peer}:${c.remoteVolume}`, c.phase, String(c.cycles), c.consistentAt ?? '-', formatSize(c.bytesShippedLast)]));
    }));

  cascade.command('close <name>')
    .description('end the session once the far site holds a whole image (at once between cycles, else after the cycle under way); CRVOL keeps it')
    .option('--timeout <seconds>', 'give up waiting after this long (exit 1; the session still closes)', '3600')
    .action((name: string, opts: { timeout: string }) => run(async (client, globals) => {
      const timeoutSeconds = Number(opts.timeout);
      if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) throw invalidArgument('--timeout must be a positive number of seconds');
      const deadline = Date.now() + timeoutSeconds * 1000;
      let r = await client.request<{ name: string; closed: boolean; consistentAt: string | null; cycles: number }>('DELETE', path(name));
      // Closing after the cycle under way: poll until the session is gone.
      while (!r.closed) {
        if (Date.now() > deadline) throw new TidemarkError(ErrorCode.Unavailable, `cascade ${name} is still closing after ${timeoutSeconds} s`, { cycles: r.cycles });
        await new Promise((resolve) => setTimeout(resolve, 500));
        try {
          const c = await client.request<CascadeView>('GET', path(name));
          r = { ...r, consistentAt: c.consistentAt, cycles: c.cycles };
        } catch (error) {
          if (!(error instanceof TidemarkError) || error.code !== ErrorCode.NotFound) throw error;
          r = { ...r, closed: true };
        }
      }
      if (globals.json) printJson(r);
      else process.stdout.write(`closed cascade ${name} after ${r.cycles} cycles; the far site holds the image of ${r.consistentAt ?? '(none)'}\n`);
    }));

  cascade.command('wait <name>')
    .description('wait until N more cycles complete, with a progress bar on a terminal')
    .option('--cycles <n>', 'cycles to wait for', '1')
    .option('--timeout <seconds>', 'give up after this long (exit 1)', '3600')
    .action((name: string, opts: { cycles: string; timeout: string }) => run(async (client, globals) => {
      const more = Number(opts.cycles);
      if (!Number.isSafeInteger(more) || more < 1) throw invalidArgument('--cycles must be a whole number ≥ 1');
      const timeoutSeconds = Number(opts.timeout);
      if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) throw invalidArgument('--timeout must be a positive number of seconds');
      const start = (await client.request<CascadeView>('GET', path(name))).cycles;
      const target = start + more;
      await waitWithProgress<CascadeView>(globals, { until: 'done', timeoutSeconds }, {
        poll: () => client.request<CascadeView>('GET', path(name)),
        state: (c) => (c.cycles >= target ? 'done' : c.phase),
        barFormat: `cascade ${name} [{bar}] {value}/{total} cycles | {phase} | {shipped} this cycle`,
        progress: (c) => ({ done: Math.min(more, c.cycles - start), total: more, payload: { phase: c.phase, shipped: formatSize(c.bytesShippingCycle) } }),
        reached: (c) => `cascade ${name}: ${c.cycles} cycles; the far site holds the image of ${c.consistentAt ?? '(none)'}\n`,
        timedOut: (c) => new TidemarkError(ErrorCode.Unavailable,
          `cascade ${name} completed ${c.cycles - start} of ${more} cycles in ${timeoutSeconds} s (phase ${c.phase}${c.lastError ? `: ${c.lastError}` : ''})`,
          { phase: c.phase, cycles: c.cycles }),
      });
    }));
}
