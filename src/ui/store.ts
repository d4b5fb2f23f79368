// What the page knows about the array, refreshed from the HTTP API: the estate every 2 s, the
// hour of history every sample, the timeline by long poll (events appear as they happen). Panels
// read one snapshot; nothing else fetches.
import { api, TokenNeeded } from './api.js';
import type { ArrayInfo, VolumeView } from '../adapters/http/schemas.js';
import type { PairStatusView, PeerView } from '../adapters/http/replication-routes.js';
import type { GroupViewBody } from '../adapters/http/group-routes.js';
import type { CloneStatus } from '../adapters/http/clone-routes.js';
import type { EventPageView, EventView, HistoryView } from '../adapters/http/observe-routes.js';
import type { JournalBody } from '../adapters/http/journal-routes.js';
import type { MigrationStatus } from '../adapters/http/migration-routes.js';
import type { ImportStatus } from '../adapters/http/import-routes.js';
import type { CascadeView } from '../adapters/http/cascade-routes.js';

export type { ArrayInfo, VolumeView, PairStatusView, PeerView, GroupViewBody, CloneStatus, EventView, HistoryView };
export type { JournalBody, MigrationStatus, ImportStatus, CascadeView };

/**
 * One API list a panel shows: `GET path` answers `{ [field]: [...] }`, kept in the estate's
 * `lists[key]`. Panels declare theirs, so a new kind of object needs no change here.
 */
export interface ListSource {
  readonly key: string;
  readonly path: string;
  readonly field: string;
}

export interface GroupEntry {
  readonly name: string;
  readonly coordinator: string;
  readonly view: GroupViewBody | null;
  readonly error: string | null;
}

export interface Estate {
  readonly array: ArrayInfo;
  readonly peers: PeerView[];
  readonly pairs: PairStatusView[];
  readonly groups: GroupEntry[];
  readonly volumes: VolumeView[];
  readonly clones: CloneStatus[];
  /** The lists the panels' sources name (journals, migrations, imports, cascades…), by key. */
  readonly lists: Readonly<Record<string, readonly unknown[]>>;
}

/** A panel's list from the estate (empty until fetched). */
export const listOf = <T>(estate: Estate, key: string): readonly T[] => (estate.lists[key] ?? []) as readonly T[];

/** A resync's pace, from the owed tracks of successive looks. */
export interface Progress {
  /** Of the most tracks owed since this resync began (as seen by this page). */
  readonly percent: number;
  readonly tracksPerSecond: number;
  readonly etaSeconds: number | null;
}

export interface Snapshot {
  readonly estate: Estate | null;
  readonly history: HistoryView | null;
  /** Newest last, the last EVENTS_KEPT. */
  readonly events: EventView[];
  readonly progress: Readonly<Record<string, Progress>>;
  readonly error: string | null;
  readonly tokenNeeded: boolean;
  readonly updatedAt: number | null;
}

const ESTATE_EVERY_MS = 2000;
const EVENTS_KEPT = 300;
const EVENT_WAIT_MS = 25_000;

type Listener = (snapshot: Snapshot) => void;

export class Store {
  private snapshot: Snapshot = { estate: null, history: null, events: [], progress: {}, error: null, tokenNeeded: false, updatedAt: null };
  private readonly listeners = new Set<Listener>();
  private cursor = 0;
  private lastOwed = new Map<string, { at: number; owed: number; rate: number; peak: number }>();
  private estateTimer: number | undefined;
  private running = false;
  private eventsRunning = false;

  constructor(private readonly sources: readonly ListSource[] = []) {}

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    listener(this.snapshot);
    return () => this.listeners.delete(listener);
  }

  get current(): Snapshot {
    return this.snapshot;
  }

  private set(change: Partial<Snapshot>): void {
    this.snapshot = { ...this.snapshot, ...change };
    for (const l of this.listeners) l(this.snapshot);
  }

  /** (Re)starts polling, e.g. after a token was given. */
  start(): void {
    this.running = true;
    this.set({ tokenNeeded: false, error: null });
    void this.refresh();
    if (!this.eventsRunning) void this.followEvents();
  }

  private stopOnToken(error: unknown): boolean {
    if (!(error instanceof TokenNeeded)) return false;
    this.running = false;
    window.clearTimeout(this.estateTimer);
    this.set({ tokenNeeded: true, error: error.message });
    return true;
  }

  /** One look at the estate now (after an action too), then again every ESTATE_EVERY_MS. */
  async refresh(): Promise<void> {
    window.clearTimeout(this.estateTimer);
    if (!this.running) return;
    try {
      const [array, { peers }, { pairs }, { groups }, { volumes }, { sessions }] = await Promise.all([
        api<ArrayInfo>('GET', '/v1/array'),
        api<{ peers: PeerView[] }>('GET', '/v1/peers'),
        api<{ pairs: PairStatusView[] }>('GET', '/v1/pairs'),
        api<{ groups: Array<{ name: string; coordinator: string }> }>('GET', '/v1/groups'),
        api<{ volumes: VolumeView[] }>('GET', '/v1/volumes'),
        api<{ sessions: CloneStatus[] }>('GET', '/v1/clones'),
      ]);
      const groupEntries = await Promise.all(groups.map(async (g): Promise<GroupEntry> => {
        try {
          return { name: g.name, coordinator: g.coordinator, view: await api<GroupViewBody>('GET', `/v1/groups/${encodeURIComponent(g.name)}`), error: null };
        } catch (error) {
          if (error instanceof TokenNeeded) throw error;
          return { name: g.name, coordinator: g.coordinator, view: null, error: (error as Error).message };
        }
      }));
      const lists: Record<string, unknown[]> = {};
      await Promise.all(this.sources.map(async (source) => {
        const answer = await api<Record<string, unknown[]>>('GET', source.path);
        lists[source.key] = answer[source.field] ?? [];
      }));
      const history = await this.history();
      this.set({
        estate: { array, peers, pairs, groups: groupEntries, volumes, clones: sessions, lists },
        history, progress: this.progressOf(pairs), error: null, updatedAt: Date.now(),
      });
    } catch (error) {
      if (this.stopOnToken(error)) return;
      this.set({ error: `cannot reach the array: ${(error as Error).message}` });
    }
    if (this.running) this.estateTimer = window.setTimeout(() => void this.refresh(), ESTATE_EVERY_MS);
  }

  /** The whole hour once, then only newer samples, appended. */
  private async history(): Promise<HistoryView> {
    const before = this.snapshot.history;
    const newest = before ? Math.max(0, ...Object.values({ ...before.pairs, ...before.volumes, ...before.peers }).map((s) => s.t[s.t.length - 1] ?? 0)) : 0;
    const fresh = await api<HistoryView>('GET', `/v1/history?sinceMs=${newest}`);
    if (!before || newest === 0) return fresh;
    const keepFrom = fresh.now - 3600_000;
    const merge = <S extends { t: number[] }>(old: Record<string, S>, add: Record<string, S>): Record<string, S> => {
      const out: Record<string, S> = {};
      for (const [name, series] of Object.entries(add)) {
        const prior = old[name];
        const merged = {} as Record<string, number[]>;
        for (const key of Object.keys(series)) merged[key] = [...((prior as unknown as Record<string, number[]> | undefined)?.[key] ?? []), ...(series as unknown as Record<string, number[]>)[key]!];
        const start = merged.t!.findIndex((t) => t >= keepFrom);
        for (const key of Object.keys(merged)) merged[key] = merged[key]!.slice(Math.max(0, start));
        out[name] = merged as unknown as S;
      }
      return out;
    };
    return { ...fresh, pairs: merge(before.pairs, fresh.pairs), volumes: merge(before.volumes, fresh.volumes), peers: merge(before.peers, fresh.peers) };
  }

  private progressOf(pairs: PairStatusView[]): Record<string, Progress> {
    const now = Date.now();
    const out: Record<string, Progress> = {};
    const next = new Map<string, { at: number; owed: number; rate: number; peak: number }>();
    for (const p of pairs) {
      const owed = p.state === 'restoring' ? p.tracksToPull : p.tracksOwed;
      const before = this.lastOwed.get(p.pair);
      let rate = before?.rate ?? 0;
      if (before && now > before.at) {
        const sample = Math.max(0, (before.owed - owed) / ((now - before.at) / 1000));
        rate = before.rate === 0 ? sample : 0.7 * before.rate + 0.3 * sample; // smoothed: one quiet look does not erase the pace
      }
      const peak = owed === 0 ? 0 : Math.max(owed, before?.peak ?? 0);
      next.set(p.pair, { at: now, owed, rate, peak });
      out[p.pair] = {
        percent: peak === 0 ? 100 : Math.floor((1000 * (peak - owed)) / peak) / 10,
        tracksPerSecond: rate, etaSeconds: owed === 0 ? 0 : rate > 0 ? owed / rate : null,
      };
    }
    this.lastOwed = next;
    return out;
  }

  /** The timeline, by long poll: a new event shows as soon as the array records it. */
  private async followEvents(): Promise<void> {
    this.eventsRunning = true;
    let first = true;
    try {
      while (this.running) {
        try {
          const page = await api<EventPageView>('GET', `/v1/events?since=${this.cursor}&waitMs=${first ? 0 : EVENT_WAIT_MS}`);
          first = false;
          if (page.next < this.cursor) this.snapshot = { ...this.snapshot, events: [] }; // the array restarted
          this.cursor = page.next;
          if (page.events.length > 0) this.set({ events: [...this.snapshot.events, ...page.events].slice(-EVENTS_KEPT) });
        } catch (error) {
          if (this.stopOnToken(error)) return;
          await new Promise((resolve) => window.setTimeout(resolve, 2000));
        }
      }
    } finally {
      this.eventsRunning = false;
    }
  }
}
