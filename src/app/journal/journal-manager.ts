// Journals on one array (SPEC §6): the commands (create, list, show, delete, pair create,
// recover), the peer operations other arrays ask of this one, and the journal positions on this
// array's primary volumes. Each journal runs in a JournalRuntime; records live in the MetaStore.
import { ErrorCode, TidemarkError, invalidArgument, notFound } from '../../core/errors.js';
import { isValidVolumeName, VOLUME_NAME_RULE } from '../../core/volume/volume-record.js';
import { computeRecovery, type LossEntry, type QueueState, type RecoveryReport } from '../../core/journal/journal-recovery.js';
import type { JournalMessage, Extent, DataEntry } from '../../core/journal/journal-types.js';
import type { JournalPosition, PlanPosition, PlanStep, TrackSet } from '../../core/volume/write-plan.js';
import type { MetaStore } from '../../ports/meta-store.js';
import type { JournalLogStore } from '../../ports/journal-log-store.js';
import { replayPrimaryLog, type IssuedRecord } from '../../core/journal/primary-log.js';

/** The sequencer's log of a journal (a name no journal can have: '@' is not in journal names). */
const sequencerLogName = (journal: string): string => `${journal}@sequencer`;
import { PrimaryLogWriter } from './primary-log-writer.js';
import type { AppliedWrite, Volume, WriteParticipant } from '../volume/volume.js';
import { JournalQueueStore } from './journal-queue-store.js';
import { JournalRecords, type JournalPairRecord, type JournalRecord } from './journal-records.js';
import { JournalRuntime, type RuntimeDeps } from './journal-runtime.js';
import { journalStatus, type JournalStatus } from './journal-status.js';

export interface JournalManagerDeps extends Omit<RuntimeDeps, 'records'> {
  readonly meta: MetaStore;
  readonly findVolume: (name: string) => Volume | undefined;
  /** Throws TM_ERR_NOT_FOUND for a peer this array does not know. */
  readonly checkPeer: (name: string) => void;
  /**
   * Where primary positions keep their log (docs/design/journal.md, "Primary restart"). Without it
   * a restarted primary array cannot resume its journals (the numbers it held have no data).
   */
  readonly logs?: JournalLogStore;
}

export interface CreateJournalOptions {
  readonly sequencer?: string;
  readonly intervalMs?: number;
  readonly batchBytes?: number;
  readonly tokens?: 'ahead' | 'sync';
}

export interface CreatePairOptions {
  readonly volume: string;
  readonly peer: string;
  readonly remoteVolume: string;
  readonly extents?: readonly Extent[];
}

/** The report as the API gives it. */
export type RecoveryResult = Omit<RecoveryReport, 'lost' | 'stranded' | 'unacknowledged' | 'secondaries'> & {
  readonly journal: string;
  readonly carriedOut: boolean;
  readonly tokens: 'ahead' | 'sync';
  lost: LossEntry[];
  stranded: LossEntry[];
  unacknowledged: LossEntry[];
  secondaries: Array<RecoveryReport['secondaries'][number]>;
};

export class JournalManager {
  private readonly runtimes = new Map<string, JournalRuntime>();
  private readonly participants = new Map<string, WriteParticipant>();
  private readonly records: JournalRecords;
  private readonly deps: RuntimeDeps & JournalManagerDeps;

  private constructor(deps: JournalManagerDeps, private readonly incarnation: number) {
    this.records = new JournalRecords(deps.meta);
    // Whole milliseconds: tokens carry the time on the wire as an integer.
    this.deps = { ...deps, records: this.records, nowMs: () => Math.floor(deps.nowMs()) };
  }

  static async open(deps: JournalManagerDeps): Promise<JournalManager> {
    const m = new JournalManager(deps, Math.floor(deps.nowMs()) % 2 ** 48);
    for (const r of await m.records.loadJournals()) await m.startRuntime(r);
    for (const p of await m.records.loadPairs()) {
      const rt = m.runtimes.get(p.journal);
      if (!rt) continue;
      rt.pairs.set(p.id, p);
      if (p.role === 'primary') m.attach(rt, p.primaryVolume);
    }
    for (const rt of m.runtimes.values()) {
      // A primary that restarts resends what its log holds at once, host writes or not.
      if (rt.replayed) {
        await rt.redoLogged();
        rt.ensurePrimary();
      }
    }
    for (const rt of m.runtimes.values()) {
      if ([...rt.pairs.values()].some((p) => p.role === 'secondary')) {
        const store = new JournalQueueStore(deps.meta, rt.record.name);
        rt.startSecondary(await store.load(), await m.records.loadMembers(rt.record.name));
      }
      rt.start();
    }
    m.registerPeerOps();
    return m;
  }

  private async startRuntime(r: JournalRecord): Promise<JournalRuntime> {
    const rt = new JournalRuntime(r, this.deps, new JournalQueueStore(this.deps.meta, r.name), this.incarnation);
    if (r.sequencer === this.deps.self) {
      const s = await this.records.loadSequencer(r.name);
      let logged: IssuedRecord[] = [];
      let next = s?.next ?? 1;
      if (this.deps.logs) {
        const { writer, records, closedCleanly } = await PrimaryLogWriter.open(this.deps.logs, sequencerLogName(r.name));
        rt.sequencerLog = writer;
        logged = records.filter((x): x is IssuedRecord => x.kind === 'issued');
        // Same boot (the process was killed) or a clean stop: the log is whole — numbering goes on
        // right after it and nothing is skipped. After a crash of the machine its tail may be gone:
        // start above the persisted bound (no number is ever reused; secondaries stop at the first
        // number the log lost).
        const sameBoot = s?.bootId !== undefined && s.bootId === this.deps.bootId;
        if (logged.length > 0 && (sameBoot || closedCleanly)) next = 1;
      }
      rt.startSequencer(next, s?.secondaries ?? [], logged);
      if (s) await this.records.saveSequencer(r.name, { next: Math.max(s.next, rt.sequencer!.nextSequence), secondaries: rt.sequencer!.secondaries, ...this.boot() });
    }
    if (this.deps.logs) {
      const { writer, records } = await PrimaryLogWriter.open(this.deps.logs, r.name);
      rt.primaryLog = writer;
      if (records.length > 0) rt.replayed = replayPrimaryLog(records);
    }
    this.runtimes.set(r.name, rt);
    return rt;
  }

  private boot(): { bootId?: string } {
    return this.deps.bootId === undefined ? {} : { bootId: this.deps.bootId };
  }

  private runtime(name: string): JournalRuntime {
    const rt = this.runtimes.get(name);
    if (!rt) throw notFound(`no journal named ${JSON.stringify(name)}`, { journal: name });
    return rt;
  }

  /** The journal's position on a primary volume: every journal with pairs there takes part in its writes. */
  private attach(_rt: JournalRuntime, volumeName: string): void {
    if (this.participants.has(volumeName)) return;
    const volume = this.deps.findVolume(volumeName);
    if (!volume) return;
    const trackBytes = volume.geometry.trackBytes;
    const participant: WriteParticipant = {
      positions: (into: PlanPosition[]) => {
        for (const rt of this.runtimes.values()) {
          const pairs = rt.primaryPairsOf(volumeName);
          if (pairs.length === 0) continue;
          into.push({ kind: 'journal', id: `journal:${rt.record.name}`, journal: rt.record.name, scope: scopeOf(pairs, trackBytes) } satisfies JournalPosition);
        }
      },
      execute: (step: PlanStep, position: PlanPosition, write: AppliedWrite | undefined) => {
        if (position.kind !== 'journal') return undefined;
        const rt = this.runtimes.get(position.journal);
        if (!rt) return undefined;
        if (step.kind === 'journal-flush') return rt.flushLog();
        if (!write) return undefined;
        if (step.kind === 'take-token') return rt.takeToken(volumeName, write);
        if (step.kind === 'journal-capture') return rt.capture(write);
        throw new Error(`journal positions do not execute ${step.kind} steps`);
      },
    };
    this.participants.set(volumeName, participant);
    volume.participants.push(participant);
  }

  // ---- commands ----

  async create(name: string, o: CreateJournalOptions): Promise<JournalStatus> {
    if (!isValidVolumeName(name)) throw invalidArgument(`invalid journal name ${JSON.stringify(name)}: ${VOLUME_NAME_RULE}`);
    if (this.runtimes.has(name)) throw new TidemarkError(ErrorCode.AlreadyExists, `journal ${name} already exists`, { journal: name });
    const intervalMs = o.intervalMs ?? 100;
    const batchBytes = o.batchBytes ?? 1024 * 1024;
    if (!Number.isInteger(intervalMs) || intervalMs < 1 || intervalMs > 3_600_000) throw invalidArgument('--interval-ms must be an integer from 1 to 3600000');
    if (!Number.isInteger(batchBytes) || batchBytes < 4096 || batchBytes > 4 * 1024 * 1024) throw invalidArgument('--batch-bytes must be from 4 KiB to 4 MiB');
    const sequencer = o.sequencer ?? this.deps.self;
    if (sequencer !== this.deps.self) this.deps.checkPeer(sequencer);
    const record: JournalRecord = { name, sequencer, intervalMs, batchBytes, tokens: o.tokens ?? 'ahead', createdAtMs: this.deps.nowMs() };
    // The sequencer learns of the journal first: a primary never asks an array that does not know it.
    if (sequencer !== this.deps.self) await this.deps.rpc.request(sequencer, { op: 'journal.create', record });
    await this.records.saveJournal(record);
    (await this.startRuntime(record)).start();
    return this.show(name);
  }

  list(): JournalStatus[] {
    return [...this.runtimes.keys()].sort().map((n) => this.show(n));
  }

  show(name: string): JournalStatus {
    return journalStatus(this.runtime(name), this.deps.self, this.deps.nowMs());
  }

  async delete(name: string): Promise<void> {
    const rt = this.runtime(name);
    rt.close();
    this.runtimes.delete(name);
    // Secondaries of this array's primary pairs forget them too (best effort: an unreachable one keeps its queue).
    const peers = new Set([...rt.pairs.values()].filter((p) => p.role === 'primary').map((p) => p.secondaryArray));
    for (const peer of peers) await this.deps.rpc.request(peer, { op: 'journal.delete', journal: name }, [], 10_000).catch(() => undefined);
    await new JournalQueueStore(this.deps.meta, name).remove();
    await this.deps.logs?.removeJournal(name);
    await this.deps.logs?.removeJournal(sequencerLogName(name));
    await this.records.removeJournal(name, [...rt.pairs.keys()]);
    // Secondary volumes go back to their hosts, as an R2's do when its pair is deleted.
    for (const p of rt.pairs.values()) if (p.role === 'secondary') await this.deps.findVolume(p.secondaryVolume)?.setState('ready');
  }

  async createPair(journal: string, o: CreatePairOptions): Promise<JournalStatus> {
    const rt = this.runtime(journal);
    const volume = this.deps.findVolume(o.volume);
    if (!volume) throw notFound(`no volume named ${JSON.stringify(o.volume)}`, { volume: o.volume });
    if (!isValidVolumeName(o.remoteVolume)) throw invalidArgument(`invalid remote volume name ${JSON.stringify(o.remoteVolume)}`);
    this.deps.checkPeer(o.peer);
    const extents = o.extents && o.extents.length > 0 ? [...o.extents] : null;
    for (const e of extents ?? []) {
      if (!Number.isInteger(e.offset) || !Number.isInteger(e.length) || e.offset < 0 || e.length <= 0 || e.offset + e.length > volume.geometry.sizeBytes) {
        throw invalidArgument(`extent ${e.offset}+${e.length} is outside volume ${o.volume} (${volume.geometry.sizeBytes} bytes)`);
      }
    }
    const id = `${journal}.${o.volume}.${o.peer}`;
    if (rt.pairs.has(id)) throw new TidemarkError(ErrorCode.AlreadyExists, `journal ${journal} already sends ${o.volume} to ${o.peer}`, { pair: id });
    for (const p of rt.primaryPairsOf(o.volume)) {
      if (p.extents === null || extents === null || p.extents.some((a) => extents.some((b) => a.offset < b.offset + b.length && b.offset < a.offset + a.length))) {
        throw new TidemarkError(ErrorCode.PairConflict, `extents overlap journal pair ${p.id} (each byte goes to one secondary)`, { pair: p.id });
      }
    }
    const joined = rt.record.sequencer === this.deps.self
      ? await this.join(rt, o.peer)
      : (await this.deps.rpc.request(rt.record.sequencer, { op: 'journal.join', journal, secondary: o.peer })).header;
    const wire = { id, primaryArray: this.deps.self, primaryVolume: o.volume, secondaryArray: o.peer, secondaryVolume: o.remoteVolume, extents };
    await this.deps.rpc.request(o.peer, { op: 'journal.pair-create', record: rt.record, pair: wire, base: joined.base, secondaries: [...joined.secondaries] });
    const record: JournalPairRecord = { ...wire, journal, role: 'primary', createdAtMs: this.deps.nowMs() };
    await this.records.savePair(record);
    rt.pairs.set(id, record);
    rt.ensurePrimary();
    this.attach(rt, o.volume);
    return this.show(journal);
  }

  /** On the sequencer: a secondary joins; every secondary learns the new membership. */
  private async join(rt: JournalRuntime, secondary: string): Promise<{ base: number; secondaries: string[] }> {
    const s = rt.sequencer;
    if (!s) throw new TidemarkError(ErrorCode.InvalidState, `${this.deps.self} is not the sequencer of journal ${rt.record.name}`);
    const base = s.addSecondary(secondary, this.deps.nowMs());
    await this.records.saveSequencer(rt.record.name, { next: rt.sequencerBound, secondaries: s.secondaries, ...this.boot() });
    const secondaries = s.secondaries;
    for (const m of secondaries) {
      if (m === secondary) continue;
      if (m === this.deps.self) await this.setMembers(rt, secondaries);
      else await this.deps.rpc.request(m, { op: 'journal.members', journal: rt.record.name, secondaries }, [], 10_000).catch(() => undefined);
    }
    rt.pump();
    return { base, secondaries };
  }

  private async setMembers(rt: JournalRuntime, members: readonly string[]): Promise<void> {
    await this.records.saveMembers(rt.record.name, members);
    if (rt.secondary) rt.startSecondary(rt.secondary.durable, members);
    else rt.members = [...members];
  }

  /** Given to any array holding a secondary: every secondary to the first incomplete entry, and the report. */
  async recover(name: string, dryRun: boolean): Promise<RecoveryResult> {
    const rt = this.runtime(name);
    if (!rt.secondary) throw new TidemarkError(ErrorCode.InvalidState, `journal ${name} has no secondary on ${this.deps.self}; recover on a secondary array`);
    const members = rt.members;
    const states: QueueState[] = [];
    for (const m of members) {
      if (m === this.deps.self) states.push(rt.secondary.queueState());
      else states.push((await this.deps.rpc.request(m, { op: 'journal.queue-state', journal: name })).header.state);
    }
    const report = computeRecovery(members, states, rt.record.tokens);
    if (!dryRun) {
      for (const m of members) {
        if (m === this.deps.self) await rt.recover(report.consistentSequence);
        else await this.deps.rpc.request(m, { op: 'journal.recover', journal: name, point: report.consistentSequence }, [], 120_000);
      }
    }
    return {
      journal: name, carriedOut: !dryRun, tokens: rt.record.tokens, ...report,
      lost: [...report.lost], stranded: [...report.stranded], unacknowledged: [...report.unacknowledged], secondaries: [...report.secondaries],
    };
  }

  /** A volume in a journal pair is not deleted or set to another state by hand. */
  checkVolumeChange(volume: string, what: string): void {
    for (const rt of this.runtimes.values()) {
      for (const p of rt.pairs.values()) {
        const mine = p.role === 'primary' ? p.primaryVolume : p.secondaryVolume;
        if (mine === volume && !(p.role === 'secondary' && rt.secondary?.durable.recoveredAt !== null && rt.secondary !== undefined)) {
          throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${volume} is in journal pair ${p.id}; delete the journal before ${what}`, { volume, pair: p.id });
        }
      }
    }
  }

  /** clean: a stop in order (logs marked whole), as opposed to abandoning the array. */
  close(clean = false): void {
    for (const rt of this.runtimes.values()) rt.close(clean);
  }

  // ---- what peers ask ----

  private registerPeerOps(): void {
    const { rpc } = this.deps;
    const empty = { header: {}, segments: [] };
    rpc.handle('journal.create', async (_peer, h) => {
      const existing = this.runtimes.get(h.record.name);
      if (existing) {
        if (existing.record.sequencer !== h.record.sequencer) {
          throw new TidemarkError(ErrorCode.AlreadyExists, `journal ${h.record.name} already exists here with sequencer ${existing.record.sequencer}`);
        }
        return empty;
      }
      await this.records.saveJournal(h.record);
      (await this.startRuntime(h.record)).start();
      return empty;
    });
    rpc.handle('journal.join', async (_peer, h) => ({ header: await this.join(this.runtime(h.journal), h.secondary), segments: [] }));
    rpc.handle('journal.members', async (_peer, h) => {
      await this.setMembers(this.runtime(h.journal), h.secondaries);
      return empty;
    });
    rpc.handle('journal.pair-create', async (peer, h) => {
      if (h.pair.primaryArray !== peer || h.pair.secondaryArray !== this.deps.self) throw invalidArgument(`journal pair ${h.pair.id} does not join ${peer} to ${this.deps.self}`);
      const volume = this.deps.findVolume(h.pair.secondaryVolume);
      if (!volume) throw notFound(`no volume named ${JSON.stringify(h.pair.secondaryVolume)} on ${this.deps.self}`, { volume: h.pair.secondaryVolume });
      let rt = this.runtimes.get(h.record.name);
      if (!rt) {
        await this.records.saveJournal(h.record);
        rt = await this.startRuntime(h.record);
        rt.start();
      }
      for (const p of rt.pairs.values()) {
        if (p.role === 'secondary' && p.secondaryVolume === h.pair.secondaryVolume && p.id !== h.pair.id) {
          throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${h.pair.secondaryVolume} already receives journal pair ${p.id}`);
        }
      }
      const record: JournalPairRecord = { ...h.pair, extents: h.pair.extents ? [...h.pair.extents] : null, journal: h.record.name, role: 'secondary', createdAtMs: this.deps.nowMs() };
      await volume.setState('write-disabled');
      await this.records.savePair(record);
      rt.pairs.set(record.id, record);
      await this.records.saveMembers(rt.record.name, h.secondaries);
      if (!rt.secondary) {
        const store = new JournalQueueStore(this.deps.meta, rt.record.name);
        const durable = await store.load();
        // A new queue starts after the numbers issued before this array joined.
        if (durable.appliedUpTo === 0 && durable.tokens.size === 0 && h.base > 0) {
          durable.appliedUpTo = h.base;
          await store.applied(h.base, null, null);
        }
        rt.startSecondary(durable, h.secondaries);
      } else {
        rt.startSecondary(rt.secondary.durable, h.secondaries);
      }
      return empty;
    });
    rpc.handle('journal.request', async (peer, h) => {
      const grant = await this.runtime(h.journal).grantLocally({ kind: 'request', from: peer, incarnation: h.incarnation, requestId: h.requestId, specs: h.specs });
      if (!grant) throw new TidemarkError(ErrorCode.InvalidState, `request ${h.requestId} of ${peer} is older than its last one`);
      return { header: { first: grant.first, count: grant.count, timeMs: grant.timeMs }, segments: [] };
    });
    rpc.handle('journal.message', async (peer, h, segments) => {
      const m = h.message;
      if (segments.length !== m.entries.length) throw new TidemarkError(ErrorCode.Protocol, `journal message with ${m.entries.length} entries carries ${segments.length} segments`);
      const entries: DataEntry[] = m.entries.map((token, i) => {
        const s = segments[i]!;
        const length = s.kind === 'data' ? s.data.length : s.length;
        if (s.offset !== token.offset || length !== token.length) throw new TidemarkError(ErrorCode.Protocol, `journal entry ${token.sequence} does not match its segment`);
        return { token, data: s.kind === 'data' ? s.data.slice() : null };
      });
      const message: JournalMessage = {
        journal: h.journal, from: m.from, role: m.role, type: m.type, continuity: m.continuity,
        ...(m.incarnation === undefined ? {} : { incarnation: m.incarnation }), tokens: m.tokens, entries,
      };
      return { header: { ackUpTo: await this.runtime(h.journal).receive(peer, message) }, segments: [] };
    });
    rpc.handle('journal.watermark', async (peer, h) => {
      const rt = this.runtime(h.journal);
      rt.secondary?.handle({ kind: 'watermark', from: peer, completeUpTo: h.completeUpTo }, this.deps.nowMs());
      rt.pump();
      return empty;
    });
    rpc.handle('journal.queue-state', async (_peer, h) => {
      const rt = this.runtime(h.journal);
      if (!rt.secondary) throw new TidemarkError(ErrorCode.InvalidState, `journal ${h.journal} has no secondary on ${this.deps.self}`);
      return { header: { state: rt.secondary.queueState(), tokens: rt.record.tokens }, segments: [] };
    });
    rpc.handle('journal.recover', async (_peer, h) => ({ header: { appliedUpTo: await this.runtime(h.journal).recover(h.point) }, segments: [] }));
    rpc.handle('journal.delete', async (_peer, h) => {
      if (this.runtimes.has(h.journal)) await this.delete(h.journal);
      return empty;
    });
  }
}

function scopeOf(pairs: readonly JournalPairRecord[], trackBytes: number): TrackSet | undefined {
  if (pairs.some((p) => p.extents === null)) return undefined;
  const ranges = pairs.flatMap((p) => p.extents!.map((e) => [Math.floor(e.offset / trackBytes), Math.floor((e.offset + e.length - 1) / trackBytes)] as const));
  return {
    anyInRange: (first, last) => ranges.some(([a, b]) => a <= last && first <= b),
    isEmpty: () => ranges.length === 0,
  };
}
