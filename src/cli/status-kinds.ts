// The kinds of object `tidemark status` shows beside links, pairs and groups: journals,
// migrations and imports, cascades. Each is read from its API list, reduced to what the screen
// and `--json` show, and printed as one table; a kind the array has none of prints nothing.
import type { ApiClient } from './api-client.js';
import { printTable } from './output.js';
import { formatSize } from './sizes.js';
import type { JournalBody } from '../adapters/http/journal-routes.js';
import type { MigrationStatus } from '../adapters/http/migration-routes.js';
import type { ImportStatus } from '../adapters/http/import-routes.js';
import type { CascadeView } from '../adapters/http/cascade-routes.js';

export interface EstateJournal {
  readonly name: string;
  readonly roles: string[];
  readonly sequencer: string;
  readonly sequence: { readonly issued: number | null; readonly sent: number | null; readonly received: number | null; readonly applied: number | null };
  readonly lag: { readonly entries: number; readonly bytes: number; readonly seconds: number | null } | null;
  /** Outgoing queue (primary): writes waiting for a number, bytes buffered, messages not yet acknowledged. */
  readonly queue: { readonly waitingWrites: number; readonly bufferedBytes: number; readonly unackedMessages: number } | null;
  /** Each other array of the journal with its link from here. */
  readonly members: Array<{ readonly array: string; readonly link: string }>;
  readonly blocked: string | null;
}
export interface EstateMigration {
  readonly volume: string; readonly target: string; readonly state: string; readonly servedFrom: string;
  readonly tracksLeft: number; readonly trackCount: number; readonly percent: number; readonly bytesPerSecond: number; readonly etaSeconds: number | null;
}
export interface EstateImport {
  readonly name: string; readonly source: string; readonly state: string; readonly sourceConnected: boolean;
  readonly tracksLeft: number; readonly trackCount: number; readonly percent: number; readonly bytesPerSecond: number; readonly etaSeconds: number | null;
  readonly lastError: string | null;
}
export interface EstateCascade {
  readonly name: string; readonly volume: string; readonly peer: string; readonly remoteVolume: string;
  readonly phase: string; readonly cycles: number; readonly bytesShipped: number;
  readonly consistentAt: string | null; readonly nextDueAt: string | null; readonly lastError: string | null;
}
export interface EstateKinds {
  readonly journals: EstateJournal[];
  readonly migrations: EstateMigration[];
  readonly imports: EstateImport[];
  readonly cascades: EstateCascade[];
}

/** `linkOf` says the state of the link to an array ('self' for this one, left out of members). */
export async function readKinds(client: ApiClient, linkOf: (array: string) => string): Promise<EstateKinds> {
  const [{ journals }, { migrations }, { imports }, { cascades }] = await Promise.all([
    client.request<{ journals: JournalBody[] }>('GET', '/v1/journals'),
    client.request<{ migrations: MigrationStatus[] }>('GET', '/v1/migrations'),
    client.request<{ imports: ImportStatus[] }>('GET', '/v1/imports'),
    client.request<{ cascades: CascadeView[] }>('GET', '/v1/cascades'),
  ]);
  return {
    journals: journals.map((j) => {
      const others = new Set<string>(j.members);
      for (const p of j.pairs) others.add(p.role === 'primary' ? p.secondaryArray : p.primaryArray);
      if (!j.roles.includes('sequencer')) others.add(j.sequencer);
      return {
        name: j.name, roles: j.roles, sequencer: j.sequencer,
        sequence: { issued: j.sequence.issued, sent: j.sequence.sent, received: j.sequence.received, applied: j.sequence.applied },
        lag: j.lag, queue: j.outgoing ? { waitingWrites: j.outgoing.waitingWrites, bufferedBytes: j.outgoing.bufferedBytes, unackedMessages: j.outgoing.unackedMessages } : null,
        members: [...others].sort().map((array) => ({ array, link: linkOf(array) })).filter((m) => m.link !== 'self'),
        blocked: j.blocked ? `at ${j.blocked.sequence}: ${j.blocked.missing}` : null,
      };
    }),
    migrations: migrations.map((m) => ({
      volume: m.volume, target: m.target, state: m.state, servedFrom: m.servedFrom, tracksLeft: m.tracksLeft, trackCount: m.trackCount,
      percent: m.percent, bytesPerSecond: m.bytesPerSecond, etaSeconds: m.etaSeconds,
    })),
    imports: imports.map((i) => ({
      name: i.name, source: i.source, state: i.state, sourceConnected: i.sourceConnected, tracksLeft: i.tracksLeft, trackCount: i.trackCount,
      percent: i.percent, bytesPerSecond: i.bytesPerSecond, etaSeconds: i.etaSeconds, lastError: i.lastError,
    })),
    cascades: cascades.map((c) => ({
      name: c.name, volume: c.volume, peer: c.peer, remoteVolume: c.remoteVolume, phase: c.phase, cycles: c.cycles,
      bytesShipped: c.bytesShipped, consistentAt: c.consistentAt, nextDueAt: c.nextDueAt, lastError: c.lastError,
    })),
  };
}

const seq = (n: number | null): string => (n === null ? '-' : String(n));
const eta = (seconds: number | null): string => (seconds === null ? '-' : `${seconds}s`);
const progress = (m: { tracksLeft: number; trackCount: number; percent: number; bytesPerSecond: number; etaSeconds: number | null }): string[] =>
  [`${m.tracksLeft}/${m.trackCount}`, `${m.percent}%`, `${formatSize(Math.round(m.bytesPerSecond))}/s`, eta(m.etaSeconds)];

/** The tables, each preceded by an empty line; nothing for a kind the array has none of. */
export function printKinds(k: EstateKinds, out: (line?: string) => void): void {
  if (k.journals.length > 0) {
    out();
    printTable(['JOURNAL', 'ROLES', 'ISSUED', 'SENT', 'RECEIVED', 'APPLIED', 'LAG', 'QUEUE', 'MEMBERS'], k.journals.map((j) => [
      j.name, j.roles.join(','), seq(j.sequence.issued), seq(j.sequence.sent), seq(j.sequence.received), seq(j.sequence.applied),
      j.lag ? `${j.lag.entries} (${formatSize(j.lag.bytes)}, ${j.lag.seconds === null ? '-' : `${j.lag.seconds.toFixed(1)} s`})` : '-',
      j.queue ? `${j.queue.waitingWrites} w, ${formatSize(j.queue.bufferedBytes)}, ${j.queue.unackedMessages} unacked` : '-',
      j.members.map((m) => `${m.array}:${m.link}`).join(' '),
    ]));
    for (const j of k.journals) if (j.blocked) out(`journal ${j.name}: blocked ${j.blocked}`);
  }
  if (k.migrations.length + k.imports.length > 0) {
    out();
    printTable(['MOVE', 'VOLUME', 'STATE', 'FROM/TO', 'LEFT', 'DONE', 'RATE', 'ETA'], [
      ...k.migrations.map((m) => ['migration', m.volume, m.state, `onto ${m.target} (served from ${m.servedFrom})`, ...progress(m)]),
      ...k.imports.map((i) => ['import', i.name, i.state, `${i.source}${i.sourceConnected ? '' : ' (disconnected)'}`, ...progress(i)]),
    ]);
    for (const i of k.imports) if (i.lastError) out(`import ${i.name}: ${i.lastError}`);
  }
  if (k.cascades.length > 0) {
    out();
    printTable(['CASCADE', 'VOLUME', 'TO', 'PHASE', 'CYCLES', 'SHIPPED', 'CONSISTENT AT', 'NEXT'], k.cascades.map((c) => [
      c.name, c.volume, `${c.peer}/${c.remoteVolume}`, c.phase, String(c.cycles), formatSize(c.bytesShipped),
      c.consistentAt ?? '-', c.nextDueAt ?? '-',
    ]));
    for (const c of k.cascades) if (c.lastError) out(`cascade ${c.name}: ${c.lastError}`);
  }
}
