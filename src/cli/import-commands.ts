// tidemark import …: start, finish, list, show, wait.
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { formatSize, parseSize } from './sizes.js';
import { printFields, printJson, printTable, type GlobalOptions } from './output.js';
import { parseWaitOptions, waitWithProgress, withWaitOptions } from './wait.js';
import { ErrorCode, TidemarkError } from '../core/errors.js';
import { IMPORT_STATES } from '../core/migration/import-machine.js';
import type { ImportStatus } from '../adapters/http/import-routes.js';

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

const path = (name: string): string => `/v1/imports/${encodeURIComponent(name)}`;

function summary(i: ImportStatus, verb: string): string {
  return `${verb} ${i.name} ← ${i.source}: ${i.state}${i.tracksLeft > 0 ? `, ${i.tracksLeft} tracks left` : ''}\n`;
}

function showImport(i: ImportStatus): void {
  printFields([
    ['import', `${i.name} ← ${i.source}`], ['state', i.state], ['size', formatSize(i.sizeBytes)],
    ['write-back', i.writeBack ? 'yes: host writes reach the source too' : 'no'],
    ['progress', `${i.percent}% — ${i.tracksLeft} of ${i.trackCount} tracks left`],
    ['copied', `${formatSize(i.bytesCopied)} (${i.tracksCopied} tracks)`], ['rate', `${formatSize(i.bytesPerSecond)}/s`],
    ['rate cap', i.maxBytesPerSecond === null ? '-' : `${formatSize(i.maxBytesPerSecond)}/s`],
    ['eta', i.etaSeconds === null ? '-' : `${i.etaSeconds} s`],
    ['source', i.sourceConnected ? 'connected' : `not connected${i.lastError ? ` (${i.lastError})` : ''}`],
    ['started', i.startedAt],
  ]);
}

export function registerImportCommands(program: Command, run: (action: Run) => Promise<void>): void {
  const imp = program.command('import')
    .description('create a volume from another NBD server\'s export, served at once while a background copy fills it');

  imp.command('start <name>')
    .description('create volume NAME of the source\'s size and export it now; unfetched tracks are read from the source')
    .requiredOption('--from <url>', 'the source export: nbd://HOST[:PORT]/EXPORT')
    .option('--write-back', 'also send host writes to the source (before acknowledging them) until the import is finished')
    .option('--max-rate <size>', 'cap the background copy at this many bytes per second (e.g. 100MiB)')
    .action((name: string, opts: { from: string; writeBack?: boolean; maxRate?: string }) => run(async (client, globals) => {
      const body = {
        name, source: opts.from, writeBack: opts.writeBack === true,
        ...(opts.maxRate !== undefined ? { maxBytesPerSecond: parseSize(opts.maxRate) } : {}),
      };
      const i = await client.request<ImportStatus>('POST', '/v1/imports', body);
      if (globals.json) printJson(i);
      else process.stdout.write(summary(i, 'importing'));
    }));

  imp.command('finish <name>')
    .description('let the source go (only once copied; with --write-back the source is flushed first)')
    .action((name: string) => run(async (client, globals) => {
      const i = await client.request<ImportStatus>('POST', `${path(name)}/finish`, {});
      if (globals.json) printJson(i);
      else process.stdout.write(summary(i, 'finished'));
    }));

  imp.command('list')
    .description('list imports, active and finished')
    .action(() => run(async (client, globals) => {
      const { imports } = await client.request<{ imports: ImportStatus[] }>('GET', '/v1/imports');
      if (globals.json) return printJson({ imports });
      printTable(['NAME', 'SOURCE', 'STATE', 'PROGRESS', 'TRACKS LEFT', 'SOURCE UP'],
        imports.map((i) => [i.name, i.source, i.state, `${i.percent}%`, String(i.tracksLeft), i.sourceConnected ? 'yes' : 'no']));
    }));

  imp.command('show <name>')
    .description('one import: state, tracks left, rate, the source\'s health')
    .action((name: string) => run(async (client, globals) => {
      const i = await client.request<ImportStatus>('GET', path(name));
      if (globals.json) printJson(i);
      else showImport(i);
    }));

  withWaitOptions(imp.command('wait <name>'), IMPORT_STATES)
    .description('wait until the import reaches a state, with a progress bar on a terminal')
    .action((name: string, opts: { until: string; timeout: string }) => run(async (client, globals) => {
      await waitWithProgress<ImportStatus>(globals, parseWaitOptions(opts, IMPORT_STATES), {
        poll: () => client.request<ImportStatus>('GET', path(name)),
        state: (i) => i.state,
        barFormat: `${name} [{bar}] {percent}% | {value}/{total} tracks | {rate}/s | eta {eta}s`,
        progress: (i) => ({ done: i.trackCount - i.tracksLeft, total: Math.max(1, i.trackCount), payload: { rate: formatSize(i.bytesPerSecond) } }),
        reached: (i) => summary(i, 'reached'),
        timedOut: (i, { until, timeoutSeconds }) => new TidemarkError(ErrorCode.Unavailable,
          `the import of ${name} is ${i.state}, not ${until}, after ${timeoutSeconds} s`, { state: i.state, tracksLeft: i.tracksLeft }),
      });
    }));
}
