// tidemark peer … and tidemark pair …: peer arrays and remote pairs (SPEC §4).
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { ApiClient } from './api-client.js';
import { formatSize, parseSize } from './sizes.js';
import { formatDurationMs, parseDurationMs } from './durations.js';
import { printFields, printJson, printTable, type GlobalOptions } from './output.js';
import { parseWaitOptions, waitWithProgress, withWaitOptions, type WaitOptions } from './wait.js';
import { ErrorCode, TidemarkError, invalidArgument } from '../core/errors.js';
import type { PairStatusView, PeerView } from '../adapters/http/replication-routes.js';
import { createJournalPair } from './journal-commands.js';

// The API's own shapes (type-only: the CLI still talks to the array over HTTP alone).
type PeerJson = PeerView;
type PairJson = PairStatusView;

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

const MODES = ['sync', 'semisync', 'adaptive', 'async'];
const POLICIES = ['continue', 'fail-writes'];
const COMMANDS: Array<[string, string]> = [
  ['establish', "copy R1 over R2: every track invalid on either side (after a split or failover this discards R2's changes)"],
  ['resume', 'resume replication after a suspend: ships only the tracks R1 changed meanwhile'],
  ['suspend', 'stop shipping; R2 stays write-disabled, R1 records what changes'],
  ['split', 'stop replicating and make R2 writable too; both sides record their changes'],
  ['failover', "make R2 writable and R1 write-disabled (on R2's array it works with the link down)"],
  ['failback', "copy R2's changes back to R1, then replicate R1 → R2 again"],
  ['restore', "copy R2's image over R1 (discarding R1's changes), then replicate R1 → R2 again; R1's other pairs get the restored tracks"],
  ['swap', 'exchange roles: R2 becomes the source, R1 the write-disabled target'],
];
const WAIT_TARGETS = ['synchronized', 'suspended', 'split', 'failed-over', 'partitioned'];

/** OFFSET:LENGTH[,OFFSET:LENGTH…] with sizes like 1GiB. */
function parseExtents(text: string): Array<{ offset: number; length: number }> {
  return text.split(',').map((part) => {
    const [offset, length, extra] = part.split(':');
    if (offset === undefined || length === undefined || extra !== undefined) throw invalidArgument(`--extents: ${JSON.stringify(part)} is not OFFSET:LENGTH`);
    return { offset: parseSize(offset), length: parseSize(length) };
  });
}

const path = (pair: string): string => `/v1/pairs/${encodeURIComponent(pair)}`;

function showPair(p: PairJson): void {
  printFields([
    ['pair', p.pair], ['volume', `${p.volume} (${p.role}) ↔ ${p.peer}:${p.remoteVolume}`], ['id', p.id], ['state', p.state],
    ['mode', p.mode], ...(p.group ? [['group', p.group] as [string, string]] : []), ['link', p.link.state], ['generation', p.generation],
    ['invalid tracks', `${p.invalidTracks.local} here (${p.invalidTracks.persisted ?? '?'} on disk), ${p.invalidTracks.remote ?? '?'} on ${p.peer}`],
    ['owed', `${p.tracksOwed} tracks (${formatSize(p.bytesOwed)})`], ['lag', `${p.lagSeconds.toFixed(1)} s`],
    ...(p.mode === 'adaptive' ? [['minimum age', p.minAgeMs > 0 ? `${formatDurationMs(p.minAgeMs)}: changes ship no sooner` : 'none: changes ship at once'] as [string, string]] : []),
    ...(p.tracksToPull > 0 ? [['to pull from R2', `${p.tracksToPull} tracks`] as [string, string]] : []),
    ...(p.cycles ? [['cycles', `capture ${p.cycles.captureCycle ?? '-'} (${p.cycles.captureRecords} records, ${formatSize(p.cycles.captureBytes)}), ` +
      `transmit ${p.cycles.transmitCycle ?? '-'} (${p.cycles.transmitRecords}, ${formatSize(p.cycles.transmitBytes)}), applied ${p.cycles.appliedCycle}, ` +
      `R2 recoverable at ${p.cycles.recoverableCycle ?? '?'}; every ${p.cycleMs} ms`] as [string, string]] : []),
    ...(p.cycles && p.role === 'R1' ? [['cycle memory', `${formatSize(p.cycles.memoryBytes)} of ${formatSize(p.cycleMemoryBytes)}; ` +
      (p.spillLimitBytes > 0 ? `spilled ${formatSize(p.cycles.spilledBytes)} (${p.cycles.spilledRecords} records) of ${formatSize(p.spillLimitBytes)}` : 'no spill to disk')] as [string, string]] : []),
    ...(p.cyclesFallback ? [['cycles fell back', `${p.cyclesFallback.at}: ${p.cyclesFallback.message}`] as [string, string]] : []),
    ['on link failure', p.onLinkFailure],
    ...(p.extents ? [['extents', p.extents.map((e) => `${formatSize(e.offset)}+${formatSize(e.length)}`).join(', ')] as [string, string]] : []),
    ...(p.protectWith ? [['protected by', `clone ${p.protectWith} on ${p.role === 'R1' ? p.peer : 'this array'}${p.protecting ? ' (splitting it before the resync)' : ''}`] as [string, string]] : []), ['shipped', `${p.counters.recordsShipped} records, ${formatSize(p.counters.bytesShipped ?? 0)}`],
    ...(p.diverged ? [['diverged', "yes: choose 'pair establish' (keep R1) or 'pair restore' (keep R2)"] as [string, string]] : []),
    ...(p.lastError ? [['last error', p.lastError] as [string, string]] : []),
  ]);
}

const line = (p: PairJson, verb: string): string =>
  `${verb} ${p.pair}${p.pair === p.volume ? '' : ` (${p.volume})`} (${p.role}) ↔ ${p.peer}:${p.remoteVolume}: ${p.state}${p.tracksOwed > 0 ? `, ${p.tracksOwed} tracks owed` : ''}\n`;

function waitFor(client: ApiClient, globals: GlobalOptions, pair: string, options: WaitOptions): Promise<void> {
  let total = 0; // the most ever owed while waiting: the bar fills as the debt is paid
  return waitWithProgress<PairJson>(globals, options, {
    poll: () => client.request<PairJson>('GET', path(pair)),
    state: (p) => p.state,
    barFormat: `${pair} [{bar}] {percentage}% | {owed} tracks owed | {state}`,
    progress: (p) => {
      const owed = p.tracksOwed + p.tracksToPull;
      total = Math.max(total, owed, 1);
      return { done: total - owed, total, payload: { owed, state: p.state } };
    },
    reached: (p) => line(p, 'reached'),
    timedOut: (p, { until, timeoutSeconds }) =>
      new TidemarkError(ErrorCode.Unavailable, `pair ${pair} is ${p.state}, not ${until}, after ${timeoutSeconds} s`, { state: p.state }),
  });
}

export function registerReplicationCommands(program: Command, run: (action: Run) => Promise<void>): void {
  const peer = program.command('peer').description('peer arrays this array replicates with');
  peer.command('add <name>')
    .description('add a peer: its link address (or the peer that relays to it) and a shared secret file (the same secret on both arrays, ≥ 16 bytes)')
    .option('--address <host:port>', "the peer's --link address")
    .option('--via <relay>', 'reach the peer through this peer of both arrays, which relays the link without being able to read or alter it ' +
      '(give one of --address and --via)')
    .addOption(new Option('--relay <relay>').hideHelp())
    .requiredOption('--secret-file <file>', 'file holding the shared secret (read by the array, on its machine)')
    .action((name: string, opts: { address?: string; relay?: string; secretFile: string }) => run(async (client, globals) => {
      if ((opts.address === undefined) === (opts.relay === undefined)) throw invalidArgument('give the peer\'s --address or the --via relay it is reached through');
      const to = opts.address !== undefined ? { address: opts.address } : { via: opts.relay! };
      const p = await client.request<PeerJson>('POST', '/v1/peers', { name, ...to, secretFile: resolve(opts.secretFile) });
      if (globals.json) printJson(p);
      else process.stdout.write(`added peer ${p.name} ${p.via ? `via ${p.via}` : `at ${p.address}`} (link ${p.link})\n`);
    }));
  peer.command('list').description('list peers and their link state').action(() => run(async (client, globals) => {
    const { peers } = await client.request<{ peers: PeerJson[] }>('GET', '/v1/peers');
    if (globals.json) return printJson({ peers });
    printTable(['NAME', 'ADDRESS', 'LINK'], peers.map((p) => [p.name, p.via ? `via ${p.via}` : p.address, p.link]));
  }));
  peer.command('show <name>').description('one peer').action((name: string) => run(async (client, globals) => {
    const p = await client.request<PeerJson>('GET', `/v1/peers/${encodeURIComponent(name)}`);
    if (globals.json) printJson(p);
    else printFields([['name', p.name], p.via ? ['relayed by', `${p.via} (end to end: ${p.via} cannot read or alter the link)`] : ['address', p.address], ['link', p.link], ['added', p.createdAt], ...(p.lastError ? [['last error', p.lastError] as [string, string]] : [])]);
  }));
  peer.command('remove <name>').description('remove a peer that has no pairs').action((name: string) => run(async (client, globals) => {
    const r = await client.request<unknown>('DELETE', `/v1/peers/${encodeURIComponent(name)}`);
    if (globals.json) printJson(r);
    else process.stdout.write(`removed peer ${name}\n`);
  }));

  const pair = program.command('pair').description('remote pairs: a local volume (R1) replicated to a volume on a peer (R2); PAIR is the pair\'s name (by default its volume\'s)');
  pair.command('create <volume>')
    .description('pair VOLUME with a volume of the same size on a peer; R2 becomes write-disabled and a full establish starts (a volume may be the R1 of up to 4 pairs)')
    .option('--name <name>', "the pair's name on both arrays; defaults to VOLUME while it has no pair, required when it has one")
    .requiredOption('--peer <name>', 'the peer array')
    .requiredOption('--remote-volume <name>', 'the volume on the peer that becomes R2')
    .requiredOption('--mode <mode>', `${MODES.join(' | ')} | journal (with --journal)`)
    .option('--journal <name>', 'journal mode: the journal the pair joins (see tidemark journal create)')
    .option('--on-link-failure <policy>', `${POLICIES.join(' | ')}: what host writes do while R2 cannot be reached`, 'continue')
    .option('--cycle-ms <ms>', 'async mode: the shortest time between cycle switches (≥ 100)', '1000')
    .option('--cycle-memory <size>', "async mode: record data R1's cycles keep in memory before spilling to disk (≥ 64KiB)", '64MiB')
    .option('--spill-limit <size>', 'async mode: cycle data R1 may spill to disk (under its data directory) before the pair falls back to bitmaps; 0: never spill', '4GiB')
    .option('--min-age <duration>', 'adaptive mode: ship a change no sooner than this long after it was made (e.g. 2s), so a track rewritten all the time ships once per interval', '0')
    .option('--extents <ranges>', 'replicate only these byte ranges, OFFSET:LENGTH[,…] in whole tracks (e.g. 0:1GiB,4GiB:512MiB); the rest of R2 stays usable by its hosts')
    .option('--protect-with <clone>', "a clone session of the remote volume on the peer: split before every resync, so a consistent image of R2 survives a disaster mid-resync")
    .action((volume: string, opts: {
      name?: string; peer: string; remoteVolume: string; mode: string; onLinkFailure: string; protectWith?: string; extents?: string; cycleMs: string;
      cycleMemory: string; spillLimit: string; minAge: string; journal?: string;
    }) => run(async (client, globals) => {
      if (opts.mode === 'journal' || opts.journal !== undefined) {
        if (opts.mode !== 'journal' || opts.journal === undefined) throw invalidArgument('a journal pair takes --mode journal and --journal NAME together');
        await createJournalPair(client, globals, opts.journal, volume, opts.peer, opts.remoteVolume, opts.extents ? parseExtents(opts.extents) : undefined);
        return;
      }
      if (!MODES.includes(opts.mode)) throw invalidArgument(`--mode must be one of ${MODES.join(', ')}`);
      if (!POLICIES.includes(opts.onLinkFailure)) throw invalidArgument(`--on-link-failure must be one of ${POLICIES.join(', ')}`);
      const p = await client.request<PairJson>('POST', '/v1/pairs',
        { volume, ...(opts.name !== undefined ? { name: opts.name } : {}), peer: opts.peer, remoteVolume: opts.remoteVolume, mode: opts.mode, onLinkFailure: opts.onLinkFailure,
          ...(opts.protectWith ? { protectWith: opts.protectWith } : {}),
          ...(opts.extents ? { extents: parseExtents(opts.extents) } : {}),
          cycleMs: Number(opts.cycleMs), cycleMemoryBytes: parseSize(opts.cycleMemory), spillLimitBytes: parseSize(opts.spillLimit),
          ...(parseDurationMs(opts.minAge, '--min-age') > 0 ? { minAgeMs: parseDurationMs(opts.minAge, '--min-age') } : {}) });
      if (globals.json) printJson(p);
      else process.stdout.write(line(p, 'created'));
    }));
  pair.command('list').description('list pair halves on this array').action(() => run(async (client, globals) => {
    const { pairs } = await client.request<{ pairs: PairJson[] }>('GET', '/v1/pairs');
    if (globals.json) return printJson({ pairs });
    printTable(['PAIR', 'VOLUME', 'ROLE', 'PEER', 'REMOTE', 'MODE', 'STATE', 'OWED', 'LAG'],
      pairs.map((p) => [p.pair, p.volume, p.role, p.peer, p.remoteVolume, p.mode, p.state, String(p.tracksOwed), `${p.lagSeconds.toFixed(1)} s`]));
  }));
  pair.command('show <pair>').description('one pair: role, mode, state, invalid tracks on both sides, owed bytes, lag, link, generation')
    .action((name: string) => run(async (client, globals) => {
      const p = await client.request<PairJson>('GET', path(name));
      if (globals.json) printJson(p);
      else showPair(p);
    }));
  withWaitOptions(pair.command('wait <pair>'), WAIT_TARGETS)
    .description('wait until the pair reaches a state, with a progress bar on a terminal')
    .action((name: string, opts: { until: string; timeout: string }) => run(async (client, globals) => {
      await waitFor(client, globals, name, parseWaitOptions(opts, WAIT_TARGETS));
    }));

  for (const [command, description] of COMMANDS) {
    pair.command(`${command} <pair>`).description(description).action((name: string) => run(async (client, globals) => {
      const p = await client.request<PairJson>('POST', `${path(name)}/${command}`, {});
      if (globals.json) printJson(p);
      else process.stdout.write(line(p, command));
    }));
  }
  pair.command('set-mode <pair> <mode>').description(`switch the mode while running: ${MODES.join(' | ')}`)
    .action((name: string, mode: string) => run(async (client, globals) => {
      if (!MODES.includes(mode)) throw invalidArgument(`mode must be one of ${MODES.join(', ')}`);
      const p = await client.request<PairJson>('PUT', `${path(name)}/mode`, { mode });
      if (globals.json) printJson(p);
      else process.stdout.write(line(p, `mode ${mode}:`));
    }));
  pair.command('delete <pair>').description("delete the pair (both halves when the link is up); both volumes become ready unless their other pairs say otherwise")
    .action((name: string) => run(async (client, globals) => {
      const r = await client.request<{ peerDeleted: boolean }>('DELETE', path(name));
      if (globals.json) printJson(r);
      else process.stdout.write(`deleted pair ${name}${r.peerDeleted ? '' : ' (the peer was unreachable: delete its half there too)'}\n`);
    }));
}

/**
 * `peer add NAME --via RELAY`: that --via names the relay, while the global `--via` (before the
 * command) routes the command. Commander reads a global option wherever it stands, so a --via after
 * `peer add` is renamed to the command's own (hidden) --relay before parsing.
 */
export function relayOptionOfPeerAdd(argv: readonly string[]): string[] {
  const out = [...argv];
  const at = out.findIndex((arg, i) => arg === 'peer' && out[i + 1] === 'add');
  if (at < 0) return out;
  for (let i = at + 2; i < out.length && out[i] !== '--'; i++) {
    if (out[i] === '--via') out[i] = '--relay';
    else if (out[i]!.startsWith('--via=')) out[i] = `--relay=${out[i]!.slice('--via='.length)}`;
  }
  return out;
}
