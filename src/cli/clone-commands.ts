// tidemark clone …: establish, split, reestablish, restore, terminate, list, show, wait.
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { formatSize } from './sizes.js';
import { printFields, printJson, printTable, type GlobalOptions } from './output.js';
import { parseWaitOptions, waitWithProgress, withWaitOptions, type WaitOptions } from './wait.js';
import { ErrorCode, TidemarkError } from '../core/errors.js';
import type { CloneStatus, SplitResult } from '../adapters/http/clone-routes.js';

// The API's own shape (type-only: the CLI still talks to the array over HTTP alone).
type CloneJson = CloneStatus & Partial<Pick<SplitResult, 'differentialTracks'>>;

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

const path = (std: string, clone: string): string => `/v1/clones/${encodeURIComponent(std)}/${encodeURIComponent(clone)}`;

function showClone(c: CloneJson): void {
  printFields([
    ['session', `${c.std} → ${c.clone} (#${c.id})`], ['state', c.state], ['operation', c.operation],
    ['split at', c.splitAt ?? '-'],
    ['progress', `${c.percent}% — ${c.tracksCopied} tracks copied, ${c.tracksToCopy} to copy`],
    ['copied', formatSize(c.bytesCopied)], ['rate', `${formatSize(c.bytesPerSecond)}/s`],
    ['eta', c.etaSeconds === null ? '-' : `${c.etaSeconds} s`],
    ['std changed since split', `${c.protectedTracks} tracks`], ['clone changed since split', `${c.cloneChangedTracks} tracks`],
  ]);
}

function summary(c: CloneJson, verb: string): string {
  return `${verb} ${c.std} → ${c.clone}: ${c.state}${c.tracksToCopy > 0 ? `, ${c.tracksToCopy} tracks to copy` : ''}\n`;
}

const WAIT_TARGETS = ['synchronized', 'restored', 'split'] as const;

function wait(client: ApiClient, globals: GlobalOptions, std: string, clone: string, options: WaitOptions): Promise<void> {
  return waitWithProgress<CloneJson>(globals, options, {
    poll: (until, waitMs) => client.request<CloneJson>('GET', `${path(std, clone)}?until=${until}&waitMs=${waitMs}`),
    longPoll: true,
    state: (c) => c.state,
    barFormat: `${std} → ${clone} [{bar}] {percentage}% | {value}/{total} tracks | {rate}/s | eta {eta_formatted}`,
    progress: (c) => ({ done: c.tracksCopied, total: Math.max(1, c.tracksCopied + c.tracksToCopy), payload: { rate: formatSize(c.bytesPerSecond) } }),
    reached: (c) => summary(c, 'reached'),
    timedOut: (c, { until, timeoutSeconds }) => new TidemarkError(ErrorCode.Unavailable,
      `${std} → ${clone} is ${c.state}, not ${until}, after ${timeoutSeconds} s`, { state: c.state, tracksToCopy: c.tracksToCopy }),
  });
}

export function registerCloneCommands(program: Command, run: (action: Run) => Promise<void>): void {
  const clone = program.command('clone').description('point-in-time clone sessions of a standard volume (up to 16 each)');

  const act = (verb: string, call: (client: ApiClient, std: string, clone: string, opts: Record<string, unknown>) => Promise<CloneJson>) =>
    (std: string, cloneName: string, opts: Record<string, unknown>) => run(async (client, globals) => {
      const c = await call(client, std, cloneName, opts);
      // --wait: one command for "start the copy and tell me when it is done" (`clone wait` folded in).
      const until = opts.wait === true ? (c.state === 'restoring' ? 'restored' : 'synchronized') : undefined;
      if (until !== undefined && c.state !== until) {
        if (!globals.json) process.stdout.write(summary(c, verb));
        return wait(client, globals, std, cloneName, parseWaitOptions({ until, timeout: String(opts.timeout) }, WAIT_TARGETS));
      }
      if (globals.json) printJson(c);
      else process.stdout.write(summary(c, verb) + (c.differentialTracks ? `  ${c.differentialTracks} tracks marked for the clone's own mirrors\n` : ''));
    });
  /** `--wait` on the commands that start a copy. */
  const waitable = (command: Command): Command => command
    .option('--wait', 'return when the copy is done (synchronized, or restored), with a progress bar on a terminal')
    .option('--timeout <seconds>', 'with --wait: give up after this long (exit 1)', '3600');

  waitable(clone.command('establish <std> <clone>'))
    .description('start a session: CLONE becomes not ready and every track of STD is copied to it')
    .action(act('established', (client, std, c) => client.request('POST', '/v1/clones', { std, clone: c })));

  clone.command('split <std> <clone>')
    .description('give CLONE the image of STD at this instant and make it ready (the session must be synchronized)')
    .option('--differential', "also mark the tracks STD changed since the last split invalid on CLONE's own mirrors (cascading)")
    .action(act('split', (client, std, c, opts) => client.request('POST', `${path(std, c)}/split`, { differential: opts.differential === true })));

  waitable(clone.command('reestablish <std> <clone>'))
    .description('reattach CLONE, copying only tracks changed on either side since the split')
    .action(act('reestablished', (client, std, c) => client.request('POST', `${path(std, c)}/reestablish`, {})));

  waitable(clone.command('restore <std> <clone>'))
    .description("copy CLONE back onto STD; STD stays online and reads the clone's data at once")
    .option('--incremental', 'copy only tracks changed on either side since the split')
    .action(act('restoring', (client, std, c, opts) => client.request('POST', `${path(std, c)}/restore`, { incremental: opts.incremental === true })));

  clone.command('terminate <std> <clone>')
    .description('end the session (refused while restoring); CLONE becomes ready with the data it holds')
    .action((std: string, c: string) => run(async (client, globals) => {
      const result = await client.request<unknown>('DELETE', path(std, c));
      if (globals.json) printJson(result);
      else process.stdout.write(`terminated ${std} → ${c}\n`);
    }));

  clone.command('list [std]')
    .description('list sessions (of one standard volume)')
    .action((std: string | undefined) => run(async (client, globals) => {
      const { sessions } = await client.request<{ sessions: CloneJson[] }>('GET', `/v1/clones${std ? `?std=${encodeURIComponent(std)}` : ''}`);
      if (globals.json) return printJson({ sessions });
      printTable(['STD', 'CLONE', '#', 'STATE', 'PROGRESS', 'TO COPY', 'SPLIT AT'],
        sessions.map((c) => [c.std, c.clone, String(c.id), c.state, `${c.percent}%`, String(c.tracksToCopy), c.splitAt ?? '-']));
    }));

  clone.command('show <std> <clone>')
    .description('one session: state, copy progress, rate and ETA')
    .action((std: string, c: string) => run(async (client, globals) => {
      const status = await client.request<CloneJson>('GET', path(std, c));
      if (globals.json) printJson(status);
      else showClone(status);
    }));

  withWaitOptions(clone.command('wait <std> <clone>'), WAIT_TARGETS)
    .description('wait until the session reaches a state, with a progress bar on a terminal')
    .action((std: string, c: string, opts: { until: string; timeout: string }) => run(async (client, globals) => {
      await wait(client, globals, std, c, parseWaitOptions(opts, WAIT_TARGETS));
    }));

}
