// tidemark migration …: start, cutover, detach, reattach, finish, list, show, wait.
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { formatSize } from './sizes.js';
import { printFields, printJson, printTable, type GlobalOptions } from './output.js';
import { parseWaitOptions, waitWithProgress, withWaitOptions } from './wait.js';
import { ErrorCode, TidemarkError } from '../core/errors.js';
import { MIGRATION_STATES } from '../core/migration/migration-machine.js';
import type { MigrationStatus } from '../adapters/http/migration-routes.js';

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

const path = (volume: string): string => `/v1/migrations/${encodeURIComponent(volume)}`;

function summary(m: MigrationStatus, verb: string): string {
  const left = m.tracksLeft > 0 ? `, ${m.tracksLeft} tracks left` : '';
  const replayed = verb === 'reattached' ? `, ${m.tracksReplayed} tracks to replay` : '';
  return `${verb} ${m.volume} → ${m.target}: ${m.state}${left}${replayed}\n`;
}

function showMigration(m: MigrationStatus): void {
  printFields([
    ['migration', `${m.volume} → ${m.target}`], ['state', m.state], ['served from', `${m.servedFrom} storage`],
    ['cutover', m.manualCutover ? 'manual' : 'automatic'],
    ['progress', `${m.percent}% — ${m.tracksLeft} of ${m.trackCount} tracks left`],
    ['copied', `${formatSize(m.bytesCopied)} (${m.tracksCopied} tracks)`], ['rate', `${formatSize(m.bytesPerSecond)}/s`],
    ['eta', m.etaSeconds === null ? '-' : `${m.etaSeconds} s`],
    ['tracks replayed', String(m.tracksReplayed)],
    ['started', m.startedAt ?? '-'], ['cut over', m.cutOverAt ?? '-'], ['detached', m.detachedAt ?? '-'],
  ]);
}

export function registerMigrationCommands(program: Command, run: (action: Run) => Promise<void>): void {
  const migration = program.command('migration')
    .description('move a volume onto another volume\'s storage online: copy, cut over, detach/reattach the old storage, finish');

  const step = (verb: string, pastTense: string, description: string): void => {
    migration.command(`${verb} <volume>`)
      .description(description)
      .action((volume: string) => run(async (client, globals) => {
        const m = await client.request<MigrationStatus>('POST', `${path(volume)}/${verb}`, {});
        if (globals.json) printJson(m);
        else process.stdout.write(summary(m, pastTense));
      }));
  };

  migration.command('start <volume>')
    .description('copy VOLUME onto the storage of --to while its hosts keep writing; cut over when copied')
    .requiredOption('--to <target>', 'an existing volume of the same size, not exported (its contents are replaced)')
    .option('--manual-cutover', 'wait for `migration cutover` once the copy is complete')
    .action((volume: string, opts: { to: string; manualCutover?: boolean }) => run(async (client, globals) => {
      const m = await client.request<MigrationStatus>('POST', '/v1/migrations',
        { volume, target: opts.to, manualCutover: opts.manualCutover === true });
      if (globals.json) printJson(m);
      else process.stdout.write(summary(m, 'started'));
    }));

  step('cutover', 'cut over', 'serve VOLUME from the new storage now (a --manual-cutover migration whose copy is complete)');
  step('detach', 'detached', 'stop writing the old storage; the tracks written from now on are recorded');
  step('reattach', 'reattached', 'write the old storage again, replaying exactly the tracks recorded while detached');
  step('finish', 'finished', 'drop the old storage (deletes the target volume that holds it); VOLUME keeps its new storage');

  migration.command('list')
    .description('list migrations, active and finished')
    .action(() => run(async (client, globals) => {
      const { migrations } = await client.request<{ migrations: MigrationStatus[] }>('GET', '/v1/migrations');
      if (globals.json) return printJson({ migrations });
      printTable(['VOLUME', 'TARGET', 'STATE', 'SERVED FROM', 'PROGRESS', 'TRACKS LEFT'],
        migrations.map((m) => [m.volume, m.target, m.state, m.servedFrom, `${m.percent}%`, String(m.tracksLeft)]));
    }));

  migration.command('show <volume>')
    .description('one migration: state, tracks left, rate and ETA, tracks replayed')
    .action((volume: string) => run(async (client, globals) => {
      const m = await client.request<MigrationStatus>('GET', path(volume));
      if (globals.json) printJson(m);
      else showMigration(m);
    }));

  withWaitOptions(migration.command('wait <volume>'), MIGRATION_STATES)
    .description('wait until the migration reaches a state, with a progress bar on a terminal')
    .action((volume: string, opts: { until: string; timeout: string }) => run(async (client, globals) => {
      await waitWithProgress<MigrationStatus>(globals, parseWaitOptions(opts, MIGRATION_STATES), {
        poll: () => client.request<MigrationStatus>('GET', path(volume)),
        state: (m) => m.state,
        barFormat: `${volume} [{bar}] {percent}% | {value}/{total} tracks | {rate}/s | eta {eta}s`,
        progress: (m) => ({ done: m.trackCount - m.tracksLeft, total: Math.max(1, m.trackCount), payload: { rate: formatSize(m.bytesPerSecond) } }),
        reached: (m) => summary(m, 'reached'),
        timedOut: (m, { until, timeoutSeconds }) => new TidemarkError(ErrorCode.Unavailable,
          `the migration of ${volume} is ${m.state}, not ${until}, after ${timeoutSeconds} s`, { state: m.state, tracksLeft: m.tracksLeft }),
      });
    }));
}
