// Clone sessions of one array: the commands, the background copy engine, the steps of STD's write
// plan that keep STD and its clones consistent, and persistence (session state rides in the STD volume's
// bitmaps record, so bitmaps and state are always persisted together).
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { CloneSession, type CloneSessionRecord } from '../../core/clone/clone-session.js';
import { MAX_SESSIONS_PER_VOLUME } from '../../core/clone/clone-limits.js';
import { ErrorCode, TidemarkError, invalidArgument, notFound } from '../../core/errors.js';
import { trackRange } from '../../core/volume/geometry.js';
import type { MirrorPosition } from '../../core/volume/mirror-positions.js';
import type { PlanPosition, PlanStep } from '../../core/volume/write-plan.js';
import type { Volume } from '../volume/volume.js';
import { UnflushedCopies } from '../volume/unflushed-copies.js';
import { StateWaiters } from '../state-waiters.js';
// A session's status is the API's shape: the schema is its one definition.
import type { CloneStatus, SplitResult } from '../../adapters/http/clone-routes.js';

const EXTENSION_KEY = 'clones';
/** Tracks one session copies at once: enough to keep the disk busy, few enough to leave room for hosts. */
const COPY_CONCURRENCY = 16;

export interface CloneHost {
  volume(name: string): Volume;
  findVolume(name: string): Volume | undefined;
  exportCount(name: string): number;
  nowMs(): number;
  onError(error: unknown, context: Record<string, unknown>): void;
}

interface Attached {
  readonly session: CloneSession;
  readonly std: Volume;
  readonly clone: Volume;
  /** Tracks copied CLONE→STD whose clearing is not yet durable; STD host writes to them wait for a persist. */
  readonly restoreNotDurable: TrackBitmap;
  /** Per direction: copies no completed flush of STD and its clones covers yet (persisted as still to copy). */
  readonly unflushed: Readonly<Record<'to-clone' | 'to-std', UnflushedCopies>>;
  readonly copying: Map<string, Promise<void>>;
  running: boolean;
  terminated: boolean;
}

const positionIds = (id: number): { protection: string; toClone: string; toStd: string } => ({
  protection: `clone:${id}:protection`, toClone: `clone:${id}:to-clone`, toStd: `clone:${id}:to-std`,
});
const cloneOwnId = (std: string): string => `clone-own:${std}`;

export class CloneManager {
  /** STD volume name → its sessions by clone name. */
  private readonly byStd = new Map<string, Map<string, Attached>>();
  /** Clone volume name → its session. */
  private readonly byClone = new Map<string, Attached>();
  private readonly persisting = new Map<string, Promise<void>>();
  /** Woken whenever a session's state may have changed (long polls of `clone wait`). */
  private readonly changes = new StateWaiters();

  private readonly kickTimer: ReturnType<typeof setInterval>;

  constructor(private readonly host: CloneHost) {
    this.kickTimer = setInterval(() => this.kick(), 1000);
    this.kickTimer.unref();
  }

  /** Rebuilds sessions from what STD volumes persisted, and restarts their copies. */
  async load(volumeNames: string[]): Promise<void> {
    for (const name of volumeNames) {
      const std = this.host.volume(name);
      const records = (std.loadedExtensions[EXTENSION_KEY] ?? []) as CloneSessionRecord[];
      if (!Array.isArray(records)) throw new TidemarkError(ErrorCode.MetadataCorrupt, `clone sessions of ${name} are not a list`);
      for (const record of records) {
        const clone = this.host.findVolume(record.clone);
        if (!clone) throw new TidemarkError(ErrorCode.MetadataCorrupt, `clone session ${name}→${record.clone}: clone volume missing`);
        const entry = this.attach(std, clone, record.id, record);
        await this.applyAccess(entry);
      }
      if (records.length > 0) this.registerPersistence(std);
    }
    for (const entry of this.byClone.values()) this.startCopying(entry);
  }

  private bitmapOn(volume: Volume, id: string, kind: MirrorPosition['kind'], missingFull: boolean): TrackBitmap {
    const existing = volume.findPosition(id);
    if (existing) return existing.invalid;
    // A position the record names but the bitmaps lack: assume every track (conservative).
    const bits = missingFull ? TrackBitmap.full(volume.geometry.trackCount) : new TrackBitmap(volume.geometry.trackCount);
    volume.addPosition({ id, kind, marksOn: 'never', invalid: bits });
    return bits;
  }

  private attach(std: Volume, clone: Volume, id: number, record?: CloneSessionRecord): Attached {
    const ids = positionIds(id);
    const missingFull = record !== undefined;
    const session = new CloneSession(id, std.name, clone.name,
      this.bitmapOn(std, ids.protection, 'clone-protection', missingFull),
      this.bitmapOn(std, ids.toClone, 'clone-to-clone', missingFull && record.state !== 'split'),
      this.bitmapOn(std, ids.toStd, 'clone-to-std', false),
      this.bitmapOn(clone, cloneOwnId(std.name), 'clone-own', missingFull),
      record);
    const entry: Attached = {
      session, std, clone, restoreNotDurable: new TrackBitmap(std.geometry.trackCount), copying: new Map(),
      unflushed: { 'to-clone': new UnflushedCopies(std.geometry.trackCount), 'to-std': new UnflushedCopies(std.geometry.trackCount) },
      running: false, terminated: false,
    };
    let sessions = this.byStd.get(std.name);
    if (!sessions) {
      sessions = new Map();
      this.byStd.set(std.name, sessions);
      std.participants.push({
        positions: (into) => this.positionsOn(std.name, into),
        execute: (step, position) => this.execute(std.name, step, position),
      });
      // A copy clears its bit in memory once the data is written, not yet durable. Before those
      // cleared bits are persisted, the copied data is made durable (STD for restores, the clones
      // for the rest), so after a power loss a clear bit always means the data is there (copies the
      // flush may not cover stay set on disk; with none pending, the fdatasync of STD and every clone
      // on each eviction batch of STD's hosts is skipped: see UnflushedCopies).
      std.beforePersist.push(() => {
        const entries = [...(this.byStd.get(std.name)?.values() ?? [])];
        return UnflushedCopies.flushCovering(entries.flatMap((e) => [e.unflushed['to-clone'], e.unflushed['to-std']]),
          () => Promise.all([std, ...entries.map((e) => e.clone)].map((v) => v.internalFlush())));
      });
    }
    entry.unflushed['to-clone'].overlay(std, ids.toClone);
    entry.unflushed['to-std'].overlay(std, ids.toStd);
    sessions.set(clone.name, entry);
    this.byClone.set(clone.name, entry);
    this.applyMarking(entry);
    return entry;
  }

  /** Which writes mark which bitmaps follows the session state. */
  private applyMarking(entry: Attached): void {
    const ids = positionIds(entry.session.id);
    const marking = entry.session.marking;
    entry.std.findPosition(ids.protection)!.marksOn = 'host';
    entry.std.findPosition(ids.toClone)!.marksOn = marking.toClone ? 'host' : 'never';
    entry.std.findPosition(ids.toStd)!.marksOn = 'never';
    entry.clone.findPosition(cloneOwnId(entry.std.name))!.marksOn = marking.cloneOwn ? 'host' : 'never';
  }

  private registerPersistence(std: Volume): void {
    std.setExtension(EXTENSION_KEY, () => [...(this.byStd.get(std.name)?.values() ?? [])].map((e) => e.session.toRecord()));
  }

  /** The clone is not ready to its hosts while attached, ready when split. */
  private async applyAccess(entry: Attached): Promise<void> {
    const wanted = entry.session.attached ? 'not-ready' : 'ready';
    if (entry.clone.state !== wanted) await entry.clone.setState(wanted);
  }

  /**
   * Persists a volume's bitmaps (and, for STD, its sessions); concurrent callers share the next run.
   * Called after every state change of a session, so it is also where waiters learn of one.
   */
  private persist(volume: Volume): Promise<void> {
    this.changes.notify();
    const previous = this.persisting.get(volume.name) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => volume.persistBitmaps());
    this.persisting.set(volume.name, next);
    void next.finally(() => {
      if (this.persisting.get(volume.name) === next) this.persisting.delete(volume.name);
    }).catch(() => undefined);
    return next;
  }

  private entry(std: string, clone: string): Attached {
    const entry = this.byStd.get(std)?.get(clone);
    if (!entry) throw notFound(`no clone session ${std}→${clone}`, { std, clone });
    return entry;
  }

  private refuseIfExported(clone: Volume, command: string): void {
    const uses = this.host.exportCount(clone.name);
    if (uses > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy,
        `cannot ${command}: clone ${clone.name} is in use by ${uses} NBD connection(s) and would change under them`, { volume: clone.name });
    }
  }

  // ---- commands ----

  async establish(stdName: string, cloneName: string): Promise<CloneStatus> {
    if (stdName === cloneName) throw invalidArgument('a volume cannot be its own clone');
    const std = this.host.volume(stdName);
    const clone = this.host.volume(cloneName);
    if (std.geometry.sizeBytes !== clone.geometry.sizeBytes || std.geometry.trackBytes !== clone.geometry.trackBytes) {
      throw invalidArgument(`clone ${cloneName} must have the size and track size of ${stdName}`,
        { std: { sizeBytes: std.geometry.sizeBytes, trackBytes: std.geometry.trackBytes }, clone: { sizeBytes: clone.geometry.sizeBytes, trackBytes: clone.geometry.trackBytes } });
    }
    const existing = this.byClone.get(cloneName);
    if (existing) {
      throw new TidemarkError(ErrorCode.InvalidState, `${cloneName} is already the clone of ${existing.std.name}; terminate that session first`, { clone: cloneName });
    }
    if (this.byClone.get(stdName)?.session.attached) {
      throw new TidemarkError(ErrorCode.InvalidState, `${stdName} is an attached clone; split it before using it as a standard volume`);
    }
    const sessions = this.byStd.get(stdName);
    if ((sessions?.size ?? 0) >= MAX_SESSIONS_PER_VOLUME) {
      throw new TidemarkError(ErrorCode.LimitExceeded, `${stdName} already has ${MAX_SESSIONS_PER_VOLUME} clone sessions, the most a volume can have`, { std: stdName });
    }
    this.refuseIfExported(clone, 'establish');
    const used = new Set([...(sessions?.values() ?? [])].map((e) => e.session.id));
    let id = 0;
    while (used.has(id)) id++;
    const entry = this.attach(std, clone, id);
    entry.session.establish(this.host.nowMs());
    this.applyMarking(entry);
    this.registerPersistence(std);
    await this.persist(std);
    await this.persist(clone);
    await this.applyAccess(entry);
    this.startCopying(entry);
    return this.status(entry);
  }

  async split(stdName: string, cloneName: string, differential: boolean): Promise<SplitResult> {
    const entry = this.entry(stdName, cloneName);
    const { session, std, clone } = entry;
    if (session.state === 'synchronizing' || session.state === 'restoring') {
      throw new TidemarkError(ErrorCode.InvalidState,
        `cannot split ${stdName}→${cloneName}: it is ${session.state} (${session.tracksToCopy} tracks left); wait until it is ${session.state === 'restoring' ? 'restored' : 'synchronized'}`,
        { state: session.state, tracksToCopy: session.tracksToCopy });
    }
    if (session.state === 'split') throw new TidemarkError(ErrorCode.InvalidState, `${stdName}→${cloneName} is already split`);
    // The write window: no STD write starts until the split is recorded; in-flight ones finish first.
    const release = await std.holdWrites();
    let differentialTracks = 0;
    try {
      await Promise.all(entry.copying.values());
      for (let t = session.toClone.nextSet(0); t !== -1; t = session.toClone.nextSet(t)) await this.copyTrack(entry, t, 'to-clone');
      session.settle();
      const changed = session.split(this.host.nowMs());
      this.applyMarking(entry);
      if (differential) {
        // The clone's own mirrors learn what changed (seed: BFM bits): its sessions as a standard
        // volume (cascade) and, later, its remote mirrors.
        const mirrors = clone.positions.filter((p) => p.kind === 'clone-protection' || (p.kind === 'clone-to-clone' && p.marksOn !== 'never'));
        for (const p of mirrors) p.invalid.or(changed);
        if (mirrors.length > 0) differentialTracks = changed.count();
      }
      await this.persist(clone);
      await this.persist(std);
      await this.applyAccess(entry);
    } finally {
      release();
    }
    return { ...this.status(entry), differentialTracks };
  }

  async reestablish(stdName: string, cloneName: string): Promise<CloneStatus> {
    const entry = this.entry(stdName, cloneName);
    this.refuseIfExported(entry.clone, 'reestablish');
    entry.session.reestablish(this.host.nowMs());
    this.applyMarking(entry);
    await this.persist(entry.std);
    await this.persist(entry.clone);
    await this.applyAccess(entry);
    this.startCopying(entry);
    return this.status(entry);
  }

  async restore(stdName: string, cloneName: string, incremental: boolean): Promise<CloneStatus> {
    const entry = this.entry(stdName, cloneName);
    this.refuseIfExported(entry.clone, 'restore');
    const release = await entry.std.holdWrites();
    try {
      const tracks = entry.session.restore(incremental, this.host.nowMs());
      // STD's content changes under its other sessions: they count those tracks as changed, and an
      // attached one must copy them again.
      for (const other of this.byStd.get(stdName)!.values()) {
        if (other === entry) continue;
        other.session.protection.or(tracks);
        if (other.session.attached) {
          other.session.toClone.or(tracks);
          other.session.settle();
        }
      }
      this.applyMarking(entry);
      await this.persist(entry.std);
      await this.persist(entry.clone);
      await this.applyAccess(entry);
    } finally {
      release();
    }
    for (const other of this.byStd.get(stdName)!.values()) this.startCopying(other);
    return this.status(entry);
  }

  async terminate(stdName: string, cloneName: string): Promise<void> {
    const entry = this.entry(stdName, cloneName);
    entry.session.checkTerminate();
    entry.terminated = true;
    await Promise.allSettled(entry.copying.values());
    const ids = positionIds(entry.session.id);
    this.byStd.get(stdName)!.delete(cloneName);
    this.byClone.delete(cloneName);
    entry.std.setPersistOverlay(ids.toClone, undefined);
    entry.std.setPersistOverlay(ids.toStd, undefined);
    entry.std.removePosition(ids.protection);
    entry.std.removePosition(ids.toClone);
    entry.std.removePosition(ids.toStd);
    entry.clone.removePosition(cloneOwnId(stdName));
    await this.persist(entry.std);
    await this.persist(entry.clone);
    if (entry.clone.state !== 'ready') await entry.clone.setState('ready');
  }

  /** Volumes in a session cannot be deleted. */
  checkDeletable(name: string): void {
    if (this.byClone.has(name) || (this.byStd.get(name)?.size ?? 0) > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${name} is part of a clone session; terminate it first`, { volume: name });
    }
  }

  list(stdName?: string): CloneStatus[] {
    const out: CloneStatus[] = [];
    for (const [std, sessions] of this.byStd) {
      if (stdName !== undefined && std !== stdName) continue;
      for (const entry of sessions.values()) out.push(this.status(entry));
    }
    return out.sort((a, b) => a.std.localeCompare(b.std) || a.id - b.id);
  }

  show(stdName: string, cloneName: string): CloneStatus {
    return this.status(this.entry(stdName, cloneName));
  }

  /** The session's status once it is in `state`, or after `waitMs` in whatever state it is then. */
  async showWhen(stdName: string, cloneName: string, state: CloneStatus['state'], waitMs: number): Promise<CloneStatus> {
    await this.changes.until(() => this.entry(stdName, cloneName).session.state === state, waitMs);
    return this.show(stdName, cloneName);
  }

  private status(entry: Attached): CloneStatus {
    const s = entry.session;
    const left = s.tracksToCopy;
    const done = s.progress.tracksCopied;
    const elapsed = Math.max(0.001, (this.host.nowMs() - s.progress.startedAtMs) / 1000);
    const rate = s.operation === 'none' ? 0 : s.progress.bytesCopied / elapsed;
    const leftBytes = left * entry.std.geometry.trackBytes;
    return {
      id: s.id, std: s.std, clone: s.clone, state: s.state, operation: s.operation,
      splitAt: s.splitAtMs === null ? null : new Date(s.splitAtMs).toISOString(),
      tracksToCopy: left, tracksCopied: done, bytesCopied: s.progress.bytesCopied,
      percent: done + left === 0 ? 100 : Math.floor((1000 * done) / (done + left)) / 10,
      bytesPerSecond: Math.round(rate),
      etaSeconds: left === 0 ? 0 : rate > 0 ? Math.ceil(leftBytes / rate) : null,
      protectedTracks: s.protection.count(),
      cloneChangedTracks: s.cloneOwn.count(),
    };
  }

  // ---- STD's write plan: the sessions as positions, and their steps ----

  private positionsOn(stdName: string, into: PlanPosition[]): void {
    for (const entry of this.byStd.get(stdName)?.values() ?? []) {
      const s = entry.session;
      into.push({
        kind: 'clone', id: entry.clone.name, copyIdle: s.attached && !entry.running, restoring: s.state === 'restoring',
        toStd: s.toStd, restoredNotDurable: entry.restoreNotDurable,
      });
    }
  }

  private execute(stdName: string, step: PlanStep, position: PlanPosition): Promise<void> | undefined {
    const entry = this.byStd.get(stdName)?.get(position.id);
    if (!entry) return undefined; // the session ended since the plan was made
    switch (step.kind) {
      case 'start-copy':
        // The write will leave a track to copy to the attached clone: make sure a copy loop runs.
        if (!entry.running) setImmediate(() => this.startCopying(entry));
        return undefined;
      case 'copy-out':
        return step.durable ? this.copyOut(entry, step.first, step.last) : this.restoreFirst(entry, step.first, step.last);
      default:
        throw new Error(`clone sessions do not execute ${step.kind} steps`);
    }
  }

  /** Before a host write to STD lands on tracks first..last. */
  private async copyOut(entry: Attached, first: number, last: number): Promise<void> {
    await this.restoreFirst(entry, first, last);
    // A restored track must not be restored again after a crash once a host write has landed on
    // it, so its cleared bit is made durable before the write goes ahead.
    if (entry.restoreNotDurable.anyInRange(first, last)) {
      const snapshot = entry.restoreNotDurable.copy();
      await this.persist(entry.std);
      entry.restoreNotDurable.andNot(snapshot);
    }
  }

  /** Instant restore: tracks of the range not yet restored are copied from the clone now. */
  private async restoreFirst(entry: Attached, first: number, last: number): Promise<void> {
    for (let t = entry.session.toStd.nextSet(first); t !== -1 && t <= last; t = entry.session.toStd.nextSet(t + 1)) {
      await this.copyTrack(entry, t, 'to-std');
    }
  }

  // ---- copy engine ----

  private copyTrack(entry: Attached, track: number, direction: 'to-std' | 'to-clone'): Promise<void> {
    const key = `${direction}:${track}`;
    const running = entry.copying.get(key);
    if (running) return running;
    const job = (async () => {
      const { session, std, clone } = entry;
      const bits = direction === 'to-std' ? session.toStd : session.toClone;
      if (!bits.test(track)) return;
      // STD's image is what its hosts read: where another session is restoring this track, that
      // restore lands first, or this clone would get STD's old data.
      if (direction === 'to-clone') {
        for (const other of this.byStd.get(std.name)?.values() ?? []) {
          if (other !== entry && other.session.toStd.test(track)) await this.copyTrack(other, track, 'to-std');
        }
      }
      const [source, target] = direction === 'to-std' ? [clone, std] : [std, clone];
      const { offset, length } = trackRange(std.geometry, track);
      // Lock the source track so no write lands between the read and clearing the bit.
      const unlock = await source.lockRange(offset, length);
      try {
        if (!bits.test(track) || entry.terminated) return;
        const data = await source.internalRead(offset, length);
        await target.internalWrite(offset, data);
        session.copied(track, direction, length);
        entry.unflushed[direction].copied(track);
        if (direction === 'to-std') entry.restoreNotDurable.set(track);
      } finally {
        unlock();
      }
    })();
    entry.copying.set(key, job);
    void job.finally(() => entry.copying.delete(key)).catch(() => undefined);
    return job;
  }

  private startCopying(entry: Attached): void {
    if (entry.running || entry.terminated) return;
    entry.running = true;
    let cursor = 0;
    const worker = async (): Promise<void> => {
      for (;;) {
        if (entry.terminated) return;
        const next = entry.session.nextCopy(cursor);
        if (!next) return;
        cursor = next.track + 1;
        await this.copyTrack(entry, next.track, next.direction);
        // Yield to host I/O between tracks.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    };
    void Promise.all(Array.from({ length: COPY_CONCURRENCY }, worker))
      .then(async () => {
        entry.running = false;
        if (entry.terminated) return;
        const before = entry.session.state;
        entry.session.settle();
        if (entry.session.nextCopy(0)) return this.startCopying(entry);
        if (before !== entry.session.state || entry.session.state === 'restored' || entry.session.state === 'synchronized') {
          await this.persist(entry.std);
          entry.restoreNotDurable.clearAll();
        }
      })
      .catch((error: unknown) => {
        entry.running = false;
        this.host.onError(error, { std: entry.std.name, clone: entry.clone.name });
      });
  }

  /** Answers every long poll now, as things are (shutting down). */
  answerLongPolls(): void {
    this.changes.releaseAll();
  }

  /** Resumes every copy loop that has work (a safety net for writes that raced a loop's end). */
  kick(): void {
    for (const entry of this.byClone.values()) if (entry.session.nextCopy(0)) this.startCopying(entry);
  }

  /** Stops every copy loop without persisting anything (a simulated crash); resolves when copies in flight settle. */
  async abandon(): Promise<void> {
    clearInterval(this.kickTimer);
    this.changes.releaseAll();
    for (const entry of this.byClone.values()) entry.terminated = true;
    await Promise.allSettled([...this.byClone.values()].flatMap((e) => [...e.copying.values()]));
    await Promise.allSettled([...this.persisting.values()]);
  }

  async close(): Promise<void> {
    clearInterval(this.kickTimer);
    this.changes.releaseAll();
    for (const entry of this.byClone.values()) entry.terminated = true;
    await Promise.allSettled([...this.byClone.values()].flatMap((e) => [...e.copying.values()]));
    await Promise.allSettled([...this.persisting.values()]);
  }
}
