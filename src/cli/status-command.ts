// tidemark status: the whole estate visible from one array on one screen — the array, its links,
// its pairs with state and lag, its groups, journals, migrations, imports and cascades — like
// `drbdadm status`. Read from the HTTP API only.
import type { Command } from 'commander';
import type { ApiClient } from './api-client.js';
import { printJson, printTable, type GlobalOptions } from './output.js';
import { formatSize } from './sizes.js';
import { invalidArgument, isTidemarkError } from '../core/errors.js';
import type { ArrayInfo } from '../adapters/http/schemas.js';
import type { PairStatusView, PeerView } from '../adapters/http/replication-routes.js';
import type { GroupViewBody } from '../adapters/http/group-routes.js';
import type { HistoryView } from '../adapters/http/observe-routes.js';
import { printKinds, readKinds, type EstateKinds } from './status-kinds.js';

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

export interface EstateLink {
  readonly peer: string;
  readonly address: string;
  /** The relay the link runs through, or null: direct. */
  readonly via: string | null;
  readonly link: string;
  readonly sentBytesPerSecond: number | null;
  readonly receivedBytesPerSecond: number | null;
  /** The link's last measured round trip (peer.ping), or null. */
  readonly rttMs: number | null;
  readonly lastError: string | null;
}
export interface EstateGroup {
  readonly name: string;
  readonly coordinator: string;
  readonly members: number;
  readonly phase: string | null;
  readonly tag: number | null;
  readonly lagSeconds: number | null;
  readonly stalled: string | null;
  readonly error: string | null;
}
export interface EstatePair {
  readonly pair: string; readonly volume: string; readonly role: string; readonly mode: string; readonly state: string;
  readonly peer: string; readonly remoteVolume: string; readonly tracksOwed: number; readonly bytesOwed: number;
  readonly lagSeconds: number; readonly group: string | null; readonly lastError: string | null;
  readonly cycles: { readonly captureCycle: number | null; readonly transmitCycle: number | null; readonly appliedCycle: number } | null;
}
/** What `status --json` prints: one object, the same facts the table shows. */
export interface Estate extends EstateKinds {
  readonly at: string;
  readonly array: ArrayInfo;
  /** This array and every peer it knows, with whether it can reach it now. */
  readonly arrays: Array<{ readonly name: string; readonly self: boolean; readonly reachable: boolean }>;
  readonly links: EstateLink[];
  readonly pairs: EstatePair[];
  readonly groups: EstateGroup[];
}

const lastOrNull = (values: ReadonlyArray<number | null> | undefined): number | null => (values && values.length > 0 ? values[values.length - 1]! : null);
const last = (values: readonly number[] | undefined): number | null => (values && values.length > 0 ? values[values.length - 1]! : null);

export async function readEstate(client: ApiClient): Promise<Estate> {
  const [array, { peers }, { pairs }, { groups }, history] = await Promise.all([
    client.request<ArrayInfo>('GET', '/v1/array'),
    client.request<{ peers: PeerView[] }>('GET', '/v1/peers'),
    client.request<{ pairs: PairStatusView[] }>('GET', '/v1/pairs'),
    client.request<{ groups: Array<{ name: string; coordinator: string; members: number }> }>('GET', '/v1/groups'),
    client.request<HistoryView>('GET', `/v1/history?sinceMs=${Date.now() - 60_000}`),
  ]);
  const kinds = await readKinds(client, (name) => (name === array.name ? 'self' : peers.find((p) => p.name === name)?.link ?? 'unknown'));
  const groupViews = await Promise.all(groups.map(async (g): Promise<EstateGroup> => {
    try {
      const v = await client.request<GroupViewBody>('GET', `/v1/groups/${encodeURIComponent(g.name)}`);
      return { name: g.name, coordinator: v.coordinator, members: v.members.length, phase: v.phase, tag: v.tag, lagSeconds: v.lagSeconds, stalled: v.stalled?.cause ?? null, error: null };
    } catch (error) {
      if (!isTidemarkError(error)) throw error;
      return { name: g.name, coordinator: g.coordinator, members: g.members, phase: null, tag: null, lagSeconds: null, stalled: null, error: error.message };
    }
  }));
  return {
    at: new Date().toISOString(),
    array,
    arrays: [{ name: array.name, self: true, reachable: true }, ...peers.map((p) => ({ name: p.name, self: false, reachable: p.link === 'up' }))],
    links: peers.map((p) => ({
      peer: p.name, address: p.address, via: p.via ?? null, link: p.link, lastError: p.lastError,
      sentBytesPerSecond: last(history.peers[p.name]?.sentBytesPerSecond), receivedBytesPerSecond: last(history.peers[p.name]?.receivedBytesPerSecond),
      rttMs: lastOrNull(history.peers[p.name]?.rttMs),
    })),
    pairs: pairs.map((p) => ({
      pair: p.pair, volume: p.volume, role: p.role, mode: p.mode, state: p.state, peer: p.peer, remoteVolume: p.remoteVolume,
      tracksOwed: p.tracksOwed, bytesOwed: p.bytesOwed, lagSeconds: p.lagSeconds, group: p.group, lastError: p.lastError,
      cycles: p.cycles ? { captureCycle: p.cycles.captureCycle, transmitCycle: p.cycles.transmitCycle, appliedCycle: p.cycles.appliedCycle } : null,
    })),
    groups: groupViews,
    ...kinds,
  };
}

const rateText = (bytesPerSecond: number | null): string => (bytesPerSecond === null ? '-' : `${formatSize(Math.round(bytesPerSecond))}/s`);

function duration(seconds: number): string {
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function printEstate(e: Estate): void {
  const out = (line = ''): void => { process.stdout.write(`${line}\n`); };
  out(`array ${e.array.name}  tidemark ${e.array.version}  up ${duration(e.array.uptimeSeconds)}  ` +
    `api ${e.array.api.host}:${e.array.api.port}  ${e.array.volumeCount} volume(s)`);
  out();
  if (e.links.length === 0) out('links: none (no peers)');
  else {
    printTable(['PEER', 'ADDRESS', 'LINK', 'RTT', 'OUT', 'IN', 'LAST ERROR'], e.links.map((l) => [
      l.peer, l.via === null ? l.address : `via ${l.via}`, l.link, l.rttMs === null ? '-' : `${l.rttMs.toFixed(2)} ms`, rateText(l.sentBytesPerSecond), rateText(l.receivedBytesPerSecond), l.lastError ?? '',
    ]));
  }
  out();
  if (e.pairs.length === 0) out('pairs: none');
  else {
    printTable(['PAIR', 'VOLUME', 'ROLE', 'MODE', 'STATE', 'PEER', 'OWED', 'LAG', 'CYCLE', 'GROUP'], e.pairs.map((p) => [
      p.pair, p.volume, p.role, p.mode, p.state, `${p.peer}/${p.remoteVolume}`,
      `${p.tracksOwed} tracks (${formatSize(p.bytesOwed)})`, `${p.lagSeconds.toFixed(1)} s`,
      p.cycles ? `${p.cycles.captureCycle ?? '-'}/${p.cycles.transmitCycle ?? '-'}/${p.cycles.appliedCycle}` : '-', p.group ?? '',
    ]));
  }
  if (e.groups.length > 0) {
    out();
    printTable(['GROUP', 'COORDINATOR', 'MEMBERS', 'PHASE', 'TAG', 'LAG', 'PROBLEM'], e.groups.map((g) => [
      g.name, g.coordinator, String(g.members), g.phase ?? '-', g.tag === null ? '-' : String(g.tag),
      g.lagSeconds === null ? '-' : `${g.lagSeconds.toFixed(1)} s`, g.error ?? (g.stalled ? `stalled: ${g.stalled}` : ''),
    ]));
  }
  for (const p of e.pairs) if (p.lastError) out(`pair ${p.pair}: ${p.lastError}`);
  printKinds(e, out);
}

export function registerStatusCommand(program: Command, run: (action: Run) => Promise<void>): void {
  program.command('status')
    .description('the estate seen from this array on one screen: the array, its links, pairs with state and lag, groups, journals, migrations and imports, cascades')
    .option('--watch', 'redraw every --interval seconds until interrupted (with --json: one JSON object per line)')
    .option('--interval <seconds>', 'time between redraws with --watch', '2')
    .action((opts: { watch?: boolean; interval: string }) => run(async (client, globals) => {
      const intervalSeconds = Number(opts.interval);
      if (!(Number.isFinite(intervalSeconds) && intervalSeconds >= 0.2 && intervalSeconds <= 3600)) {
        throw invalidArgument('--interval must be a number of seconds between 0.2 and 3600');
      }
      const show = async (): Promise<void> => {
        const estate = await readEstate(client);
        if (globals.json) {
          if (opts.watch) process.stdout.write(`${JSON.stringify(estate)}\n`);
          else printJson(estate);
          return;
        }
        // On a terminal, redraw in place; into a pipe, one screen after another.
        if (opts.watch && process.stdout.isTTY) process.stdout.write('\x1b[H\x1b[2J');
        printEstate(estate);
        if (opts.watch) process.stdout.write(`\n${estate.at}  (every ${intervalSeconds} s; Ctrl-C ends)\n${process.stdout.isTTY ? '' : '\n'}`);
      };
      await show();
      while (opts.watch) {
        await new Promise((resolve) => setTimeout(resolve, intervalSeconds * 1000));
        await show();
      }
    }));
}
