// tidemark journal …: journal replication with one global write sequence and an exact loss report (SPEC §6).
import type { Command } from 'commander';
import type { ApiClient } from './api-client.js';
import { formatSize, parseSize } from './sizes.js';
import { printFields, printJson, printTable, type GlobalOptions } from './output.js';
import { invalidArgument } from '../core/errors.js';
import type { JournalBody, JournalRecoveryBody } from '../adapters/http/journal-routes.js';

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

const path = (name: string): string => `/v1/journals/${encodeURIComponent(name)}`;
const seq = (n: number | null): string => (n === null ? '-' : String(n));
const time = (ms: number | null): string => (ms === null ? '-' : new Date(ms).toISOString());

function showJournal(j: JournalBody): void {
  printFields([
    ['journal', j.name], ['sequencer', j.sequencer], ['tokens', j.tokens], ['interval', `${j.intervalMs} ms`], ['batch', formatSize(j.batchBytes)],
    ['roles here', j.roles.join(', ') || '-'],
    ['issued', seq(j.sequence.issued)], ['taken here', seq(j.sequence.taken)], ['sent', seq(j.sequence.sent)],
    ['received', seq(j.sequence.received)], ['complete', seq(j.sequence.complete)], ['applied', seq(j.sequence.applied)],
    ...(j.lag ? [['lag', `${j.lag.entries} entries, ${formatSize(j.lag.bytes)}, ${j.lag.seconds === null ? '?' : j.lag.seconds.toFixed(1)} s`] as [string, string]] : []),
    ...(j.outgoing ? [['outgoing', `${j.outgoing.waitingWrites} writes waiting for numbers, ${formatSize(j.outgoing.bufferedBytes)} buffered, ` +
      `${j.outgoing.unackedMessages} messages unacknowledged`] as [string, string]] : []),
    ['secondaries', j.members.join(', ') || '-'],
    ...(j.blocked ? [['waiting at', `${j.blocked.sequence}: ${j.blocked.missing}`] as [string, string]] : []),
    ...(j.recovered ? [['RECOVERED', 'the queue takes no more messages']] as Array<[string, string]> : []),
  ]);
  process.stdout.write('\n');
  printTable(['PAIR', 'ROLE', 'PRIMARY', 'SECONDARY', 'EXTENTS'], j.pairs.map((p) => [
    p.id, p.role, `${p.primaryArray}/${p.primaryVolume}`, `${p.secondaryArray}/${p.secondaryVolume}`,
    p.extents ? p.extents.map((e) => `${e.offset}:${e.length}`).join(',') : 'whole volume',
  ]));
}

function showRecovery(r: JournalRecoveryBody): void {
  printFields([
    ['journal', r.journal], ['tokens', r.tokens],
    ['consistent sequence', String(r.consistentSequence)], ['consistent time', time(r.consistentTime)],
    ['highest known', String(r.highestKnown)], ['last message', time(r.lastMessageAt)],
  ]);
  const rows = (kind: string, list: JournalRecoveryBody['lost']): string[][] =>
    list.map((e) => [kind, String(e.sequence), e.volume, String(e.offset), String(e.length), e.secondary, time(e.timeMs)]);
  const all = [...rows('lost', r.lost), ...rows('stranded', r.stranded), ...rows('unacknowledged', r.unacknowledged)];
  if (all.length > 0) {
    process.stdout.write('\n');
    printTable(['KIND', 'SEQUENCE', 'VOLUME', 'OFFSET', 'LENGTH', 'SECONDARY', 'NUMBERED AT'], all);
  }
  process.stdout.write(`\n${r.carriedOut ? 'recovered' : 'dry run, nothing changed'}: every secondary image ${r.carriedOut ? 'holds' : 'would hold'} ` +
    `exactly the writes numbered up to ${r.consistentSequence}; ${r.lost.length} lost, ${r.stranded.length} stranded` +
    (r.tokens === 'sync' ? ` (tokens sync: every acknowledged write not in the images is listed)` : ` (tokens ahead: writes after the last message may be unknown)`) +
    `${r.carriedOut ? '; the secondary volumes are writable now' : ''}.\n`);
}

export async function createJournalPair(client: ApiClient, globals: GlobalOptions, journal: string, volume: string, peer: string, remoteVolume: string,
  extents: Array<{ offset: number; length: number }> | undefined): Promise<void> {
  const j = await client.request<JournalBody>('POST', `${path(journal)}/pairs`, { volume, peer, remoteVolume, ...(extents ? { extents } : {}) });
  if (globals.json) printJson(j);
  else process.stdout.write(`journal ${journal}: ${volume} → ${peer}/${remoteVolume}${extents ? ` (${extents.length} extent(s))` : ''}; the secondary volume is write-disabled\n`);
}

export function registerJournalCommands(program: Command, run: (action: Run) => Promise<void>): void {
  const journal = program.command('journal')
    .description('journal replication: every write of the journal\'s volumes, on any array, gets a global sequence number; secondaries apply in order');
  journal.command('create <name>')
    .description('create a journal; add volumes with: tidemark pair create VOL --peer P --remote-volume RV --mode journal --journal NAME')
    .option('--sequencer <peer>', 'the peer that hands out sequence numbers (default: the array you talk to); create the journal on every primary array with the same sequencer')
    .option('--interval-ms <ms>', 'a message leaves at the latest this long after its oldest entry', '100')
    .option('--batch-bytes <size>', 'a message leaves when this much data is buffered (4KiB to 4MiB)', '1MiB')
    .option('--tokens <mode>', 'ahead: a write completes once numbered (token sent in the next message); sync: once its secondary holds the token (exact loss report)', 'ahead')
    .action((name: string, opts: { sequencer?: string; intervalMs: string; batchBytes: string; tokens: string }) => run(async (client, globals) => {
      if (opts.tokens !== 'ahead' && opts.tokens !== 'sync') throw invalidArgument('--tokens must be ahead or sync');
      const intervalMs = Number(opts.intervalMs);
      if (!Number.isSafeInteger(intervalMs) || intervalMs < 1) throw invalidArgument('--interval-ms must be a whole number of at least 1');
      const j = await client.request<JournalBody>('POST', '/v1/journals', {
        name, intervalMs, batchBytes: parseSize(opts.batchBytes), tokens: opts.tokens, ...(opts.sequencer ? { sequencer: opts.sequencer } : {}),
      });
      if (globals.json) printJson(j);
      else process.stdout.write(`created journal ${j.name} (sequencer ${j.sequencer}, tokens ${j.tokens})\n`);
    }));
  journal.command('list').description('journals this array takes part in').action(() => run(async (client, globals) => {
    const { journals } = await client.request<{ journals: JournalBody[] }>('GET', '/v1/journals');
    if (globals.json) return printJson({ journals });
    printTable(['JOURNAL', 'SEQUENCER', 'TOKENS', 'ROLES', 'ISSUED', 'APPLIED', 'LAG'], journals.map((j) => [
      j.name, j.sequencer, j.tokens, j.roles.join(',') || '-', seq(j.sequence.issued ?? j.sequence.taken), seq(j.sequence.applied),
      j.lag ? `${j.lag.entries} entries` : '-',
    ]));
  }));
  journal.command('show <name>').description('sequence issued, sent, received, applied; lag; queue sizes; pairs')
    .action((name: string) => run(async (client, globals) => {
      const j = await client.request<JournalBody>('GET', path(name));
      if (globals.json) printJson(j);
      else showJournal(j);
    }));
  journal.command('delete <name>').description('delete the journal and its pairs on this array (their secondaries forget them too)')
    .action((name: string) => run(async (client, globals) => {
      await client.request<unknown>('DELETE', path(name));
      if (globals.json) printJson({ deleted: name });
      else process.stdout.write(`deleted journal ${name}\n`);
    }));
  journal.command('recover <name>')
    .description('after losing the primary site, on an array holding a secondary: apply up to the first incomplete entry everywhere and report what was lost')
    .option('--dry-run', 'compute and print the report, change nothing')
    .action((name: string, opts: { dryRun?: boolean }) => run(async (client, globals) => {
      const r = await client.request<JournalRecoveryBody>('POST', `${path(name)}/recover`, { dryRun: opts.dryRun === true });
      if (globals.json) printJson(r);
      else showRecovery(r);
    }));
}
