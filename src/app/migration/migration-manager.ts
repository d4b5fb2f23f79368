// Online migrations of one array (SPEC §8; docs/design/migration.md): the commands, the background
// copy (and replay), the steps of VOL's write plan that keep the other storage equal, the cutover
// that exchanges stores under open NBD connections, and persistence. The decisions are the core
// machine's (core/migration/migration-machine.ts); this module executes them.
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError, invalidArgument, notFound } from '../../core/errors.js';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import {
  MigrationMachine, newMigration, parseMigrationRecord, type MigrationEvent, type MigrationRecord,
} from '../../core/migration/migration-machine.js';
import { trackRange, tracksOf } from '../../core/volume/geometry.js';
import type { PlanStep } from '../../core/volume/write-plan.js';
import type { BlockStoreFactory } from '../../ports/block-store.js';
import type { Timers } from '../../ports/timers.js';
import type { MetaStore, SlotJournalFactory } from '../../ports/meta-store.js';
import { bitmapsKey, volumeKey, type AppliedWrite, type Volume, type WriteParticipant } from '../volume/volume.js';
import { UnflushedCopies } from '../volume/unflushed-copies.js';
import type { MigrationStatus } from '../../adapters/http/migration-routes.js';
import { isAllZero } from './zero-data.js';

const RECORD_PREFIX = 'migration/';
const recordKey = (volume: string): string => `${RECORD_PREFIX}${volume}`;
const positionId = (target: string): string => `migration:${target}`;
/** Tracks copied at once: keeps the disks busy and leaves room for host I/O between them. */
const COPY_CONCURRENCY = 4;
/** Copy progress is made durable this often (tracks), so a crash does not redo the whole copy. */
const PERSIST_EVERY_TRACKS = 512;

export interface MigrationHost {
  readonly meta: MetaStore;
  readonly stores: BlockStoreFactory;
  volume(name: string): Volume;
  findVolume(name: string): Volume | undefined;
  exportCount(name: string): number;
  /** Throws when the volume takes part in something that must not change under it (clone sessions, pairs). */
  checkVolumeFree(name: string, what: string): void;
  /** Closes a volume and drops its records and activity log, keeping its storage file. */
  forgetVolume(name: string): Promise<void>;
  nowMs(): number;
  /** The event loop's timers in the daemon, virtual time in the simulator. */
  readonly timers: Timers;
  /** Waits `ms` (0: one turn, so host I/O goes first). */
  pause(ms: number): Promise<void>;
  onError(error: unknown, context: Record<string, unknown>): void;
  onEvent(message: string, fields: Record<string, unknown>): void;
}

interface Running {
  machine: MigrationMachine;
  readonly vol: Volume;
  readonly target: Volume;
  /** Tracks the other storage lacks (VOL's position bitmap). */
  readonly left: TrackBitmap;
  /** Copies no completed flush of the other storage covers yet (persisted as still to copy). */
  readonly unflushed: UnflushedCopies;
  readonly copying: Map<number, Promise<void>>;
  readonly participant: WriteParticipant;
  readonly beforePersist: () => Promise<void>;
  running: boolean;
  /** A state change is under way: no new copy starts (it would hold a range of VOL in its window). */
  pausedCopy: boolean;
  stopped: boolean;
  progress: { startedAtMs: number; tracksCopied: number; bytesCopied: number; sincePersist: number };
}

export class MigrationManager {
  /** VOL name → its migration (active ones). */
  private readonly active = new Map<string, Running>();
  /** VOL name → a finished migration's record (for `show`). */
  private readonly finished = new Map<string, MigrationRecord>();
  private recordWrites: Promise<void> = Promise.resolve();
  private readonly stopKick: () => void;

  constructor(private readonly host: MigrationHost) {
    this.stopKick = host.timers.every(1000, () => this.kick());
  }

  /**
   * Before any volume opens: which store serves which volume (a cutover exchanged them), and a
   * finish a crash interrupted is completed, so the old storage is gone and VOL's carries its name.
   */
  static async recoverStores(meta: MetaStore, stores: BlockStoreFactory, journals: SlotJournalFactory): Promise<Map<string, string>> {
    const storeOf = new Map<string, string>();
    for (const key of await meta.list(RECORD_PREFIX)) {
      const bytes = await meta.read(key);
      if (!bytes) continue;
      const machine = new MigrationMachine(parseMigrationRecord(decodeJson(bytes, key), key));
      const r = machine.record;
      if (r.state === 'finished' && !r.settled) {
        await dropTargetRecords(meta, journals, r.target);
        await stores.rename(r.target, r.volume);
        await meta.write(key, encodeJson(machine.handle({ kind: 'settled' }, r.startedAtMs, 0)));
      } else if (machine.storesExchanged) {
        storeOf.set(r.volume, r.target);
        storeOf.set(r.target, r.volume);
      }
    }
    return storeOf;
  }

  /** Resumes the migrations the metadata store holds (the volumes are open, stores already exchanged). */
  async load(volumeNames: readonly string[]): Promise<void> {
    const migrating = new Set<string>();
    for (const key of await this.host.meta.list(RECORD_PREFIX)) {
      const bytes = await this.host.meta.read(key);
      if (!bytes) continue;
      const record = parseMigrationRecord(decodeJson(bytes, key), key);
      if (record.state === 'finished') {
        this.finished.set(record.volume, record);
        continue;
      }
      const vol = this.host.findVolume(record.volume);
      const target = this.host.findVolume(record.target);
      if (!vol || !target) {
        throw new TidemarkError(ErrorCode.MetadataCorrupt, `migration of ${record.volume} onto ${record.target}: a volume is missing`);
      }
      this.attach(vol, target, new MigrationMachine(record), true);
      migrating.add(vol.name);
    }
    // A finish that removed VOL's position only in memory before a crash leaves it in the bitmaps.
    for (const name of volumeNames) {
      if (migrating.has(name)) continue;
      const volume = this.host.volume(name);
      const stale = volume.positions.filter((p) => p.kind === 'migration');
      if (stale.length === 0) continue;
      for (const p of stale) volume.removePosition(p.id);
      await volume.persistBitmaps();
    }
    for (const r of this.active.values()) {
      if (r.target.state !== 'not-ready') await r.target.setState('not-ready');
      this.advance(r);
    }
  }

  private attach(vol: Volume, target: Volume, machine: MigrationMachine, loaded: boolean): Running {
    const id = positionId(target.name);
    let position = vol.findPosition(id);
    if (!position) {
      // Started (or loaded) without the bitmap on record: every track is to be copied (conservative).
      position = { id, kind: 'migration', marksOn: machine.marksOn, invalid: TrackBitmap.full(vol.geometry.trackCount) };
      vol.addPosition(position);
    } else if (!loaded) {
      position.invalid.setAll();
    }
    position.marksOn = machine.marksOn;
    const left = position.invalid;
    const entry: Running = {
      machine, vol, target, left, unflushed: new UnflushedCopies(vol.geometry.trackCount), copying: new Map(), running: false,
      pausedCopy: false, stopped: false,
      progress: { startedAtMs: this.host.nowMs(), tracksCopied: 0, bytesCopied: 0, sincePersist: 0 },
      participant: {
        positions: (into) => {
          if (!entry.stopped) into.push({ kind: 'migration', id: target.name, mirroring: entry.machine.mirroring, left });
        },
        execute: (step, _position, write) => this.execute(entry, step, write),
      },
      // Copied data reaches the other storage's disk before the bits saying so are persisted.
      beforePersist: async () => {
        if (!entry.stopped) await UnflushedCopies.flushCovering([entry.unflushed], () => entry.target.internalFlush());
      },
    };
    vol.participants.push(entry.participant);
    vol.beforePersist.push(entry.beforePersist);
    entry.unflushed.overlay(vol, positionId(target.name));
    this.active.set(vol.name, entry);
    return entry;
  }

  private detachFromVolume(entry: Running): void {
    entry.stopped = true;
    const { vol } = entry;
    const p = vol.participants.indexOf(entry.participant);
    if (p >= 0) vol.participants.splice(p, 1);
    const b = vol.beforePersist.indexOf(entry.beforePersist);
    if (b >= 0) vol.beforePersist.splice(b, 1);
    vol.setPersistOverlay(positionId(entry.target.name), undefined);
    vol.removePosition(positionId(entry.target.name));
    this.active.delete(vol.name);
  }

  /** One record write at a time, in call order (two writes of one key in flight may land in either order). */
  private writeRecord(record: MigrationRecord): Promise<void> {
    const run = this.recordWrites.then(() => this.host.meta.write(recordKey(record.volume), encodeJson(record)));
    this.recordWrites = run.catch(() => undefined);
    return run;
  }

  private entry(volume: string): Running {
    const entry = this.active.get(volume);
    if (!entry) {
      if (this.finished.has(volume)) throw new TidemarkError(ErrorCode.InvalidState, `the migration of ${volume} is finished`, { volume });
      throw notFound(`volume ${volume} is not migrating`, { volume });
    }
    return entry;
  }

  /** Which migration a volume takes part in, as VOL or as target. */
  private involving(name: string): Running | undefined {
    for (const r of this.active.values()) if (r.vol.name === name || r.target.name === name) return r;
    return undefined;
  }

  /** Deleting a volume, or setting its state by hand, is refused while it migrates. */
  checkVolumeChange(name: string, what: string): void {
    const r = this.involving(name);
    if (r) {
      throw new TidemarkError(ErrorCode.VolumeBusy,
        `volume ${name} is in the migration of ${r.vol.name} onto ${r.target.name}; ${what} is refused (finish it first)`, { volume: name });
    }
  }

  // ---- commands ----

  async start(volName: string, targetName: string, manualCutover: boolean): Promise<MigrationStatus> {
    if (volName === targetName) throw invalidArgument('a volume cannot migrate onto itself');
    const vol = this.host.volume(volName);
    const target = this.host.volume(targetName);
    if (vol.geometry.sizeBytes !== target.geometry.sizeBytes || vol.geometry.trackBytes !== target.geometry.trackBytes) {
      throw invalidArgument(`${targetName} must have the size and track size of ${volName}`, {
        volume: { sizeBytes: vol.geometry.sizeBytes, trackBytes: vol.geometry.trackBytes },
        target: { sizeBytes: target.geometry.sizeBytes, trackBytes: target.geometry.trackBytes },
      });
    }
    for (const name of [volName, targetName]) {
      const r = this.involving(name);
      if (r) throw new TidemarkError(ErrorCode.InvalidState, `${name} is already in the migration of ${r.vol.name} onto ${r.target.name}`, { volume: name });
    }
    const uses = this.host.exportCount(targetName);
    if (uses > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy, `${targetName} is exported to ${uses} NBD connection(s); a migration target must not be in use`,
        { volume: targetName });
    }
    this.host.checkVolumeFree(targetName, 'migrating onto it');
    // The record first: a crash before the bitmap is persisted reloads with every track to copy.
    const machine = new MigrationMachine(newMigration(volName, targetName, manualCutover, this.host.nowMs()));
    await this.writeRecord(machine.record);
    this.finished.delete(volName);
    await target.setState('not-ready');
    const entry = this.attach(vol, target, machine, false);
    await vol.persistBitmaps();
    this.host.onEvent('migration started', { volume: volName, target: targetName, manualCutover });
    this.advance(entry);
    return this.status(entry);
  }

  async cutover(volName: string): Promise<MigrationStatus> {
    const entry = this.entry(volName);
    entry.machine.check({ kind: 'cut-over' }, entry.left.count());
    await this.cutOver(entry);
    return this.status(entry);
  }

  async detach(volName: string): Promise<MigrationStatus> {
    const entry = this.entry(volName);
    await this.transition(entry, { kind: 'detach' });
    this.host.onEvent('migration detached', { volume: volName });
    return this.status(entry);
  }

  async reattach(volName: string): Promise<MigrationStatus> {
    const entry = this.entry(volName);
    await this.transition(entry, { kind: 'reattach', tracksLeft: entry.left.count() });
    this.resetProgress(entry);
    this.host.onEvent('migration reattached', { volume: volName, tracksReplayed: entry.machine.record.tracksReplayed });
    this.advance(entry);
    return this.status(entry);
  }

  async finish(volName: string): Promise<MigrationStatus> {
    const entry = this.entry(volName);
    entry.machine.check({ kind: 'finish' }, entry.left.count());
    const release = await this.window(entry);
    try {
      const previous = entry.machine.record;
      try {
        await this.writeRecord(entry.machine.handle({ kind: 'finish' }, this.host.nowMs(), entry.left.count()));
      } catch (error) {
        entry.machine = new MigrationMachine(previous);
        throw error;
      }
      this.detachFromVolume(entry);
      await entry.vol.persistBitmaps();
    } finally {
      release();
    }
    await Promise.allSettled(entry.copying.values());
    await this.settle(entry);
    this.host.onEvent('migration finished', { volume: volName });
    return this.show(volName);
  }

  show(volName: string): MigrationStatus {
    const entry = this.active.get(volName);
    if (entry) return this.status(entry);
    const done = this.finished.get(volName);
    if (done) return recordStatus(done, 0, 0, { tracksCopied: 0, bytesCopied: 0, startedAtMs: 0 }, 0, this.host.nowMs());
    throw notFound(`volume ${volName} is not migrating`, { volume: volName });
  }

  list(): MigrationStatus[] {
    const names = new Set([...this.active.keys(), ...this.finished.keys()]);
    return [...names].sort().map((n) => this.show(n));
  }

  private status(entry: Running): MigrationStatus {
    return recordStatus(entry.machine.record, entry.left.count(), entry.vol.geometry.trackCount, entry.progress,
      entry.vol.geometry.trackBytes, this.host.nowMs());
  }

  // ---- state changes ----

  /** A write window on VOL (and so on the target, which only VOL's steps write), with the copy paused. */
  private async window(entry: Running): Promise<() => void> {
    entry.pausedCopy = true;
    const releaseVol = await entry.vol.holdWrites();
    const releaseTarget = await entry.target.holdWrites();
    return () => {
      releaseTarget();
      releaseVol();
      entry.pausedCopy = false;
    };
  }

  /** Detach or reattach: persisted, and the position marks by the new state, before any write goes on. */
  private async transition(entry: Running, event: MigrationEvent): Promise<void> {
    entry.machine.check(event, entry.left.count());
    const release = await this.window(entry);
    try {
      const previous = entry.machine.record;
      try {
        await this.writeRecord(entry.machine.handle(event, this.host.nowMs(), entry.left.count()));
      } catch (error) {
        entry.machine = new MigrationMachine(previous);
        throw error;
      }
      entry.vol.position(positionId(entry.target.name)).marksOn = entry.machine.marksOn;
      // The marking rule is persisted too: a crash reloads a detached position as one writes mark.
      await entry.vol.persistBitmaps();
    } finally {
      release();
    }
  }

  /**
   * VOL's storage becomes the target's, inside a write window: both flushed, the exchange persisted,
   * then the two volumes exchange stores in memory. NBD connections hold the Volume, not the store,
   * so they carry on; after a crash the record makes VOL open the target's storage.
   */
  private async cutOver(entry: Running): Promise<void> {
    const release = await this.window(entry);
    try {
      entry.machine.check({ kind: 'cut-over' }, entry.left.count());
      await entry.target.internalFlush();
      await entry.vol.internalFlush();
      // The window holds hosts' writes; internal work that does not wait at it (another feature's
      // copy reading VOL) is let finish, and the stores are exchanged with nothing in flight. Until
      // the record says otherwise a restart serves VOL from its old storage, which is equal now.
      await this.drain(entry);
      entry.vol.exchangeStore(entry.target);
      const previous = entry.machine.record;
      try {
        await this.writeRecord(entry.machine.handle({ kind: 'cut-over' }, this.host.nowMs(), 0));
      } catch (error) {
        entry.machine = new MigrationMachine(previous);
        await this.drain(entry);
        entry.vol.exchangeStore(entry.target);
        throw error;
      }
      entry.vol.position(positionId(entry.target.name)).marksOn = entry.machine.marksOn;
    } finally {
      release();
    }
    this.resetProgress(entry);
    this.host.onEvent('migration cut over', { volume: entry.vol.name, target: entry.target.name });
  }

  private async drain(entry: Running): Promise<void> {
    while (entry.vol.inFlightWrites > 0 || entry.target.inFlightWrites > 0) await this.host.pause(1);
  }

  /** The old storage goes: the target volume is forgotten and VOL's storage takes VOL's name. */
  private async settle(entry: Running): Promise<void> {
    await this.host.forgetVolume(entry.target.name);
    await this.host.stores.rename(entry.target.name, entry.vol.name);
    const record = entry.machine.handle({ kind: 'settled' }, this.host.nowMs(), 0);
    await this.writeRecord(record);
    this.finished.set(entry.vol.name, record);
  }

  // ---- VOL's write plan: the other storage as a position ----

  private execute(entry: Running, step: PlanStep, write: AppliedWrite | undefined): Promise<void> | undefined {
    switch (step.kind) {
      case 'mirror':
        return this.mirror(entry, write!);
      case 'owe-whole': {
        const { first, last } = tracksOf(entry.vol.geometry, write!.offset, write!.length);
        entry.left.setRange(first, last);
        return undefined;
      }
      default:
        throw new Error(`migrations do not execute ${step.kind} steps`);
    }
  }

  /** The write reaches the other storage too; if it cannot, its tracks are copied again later. */
  private async mirror(entry: Running, write: AppliedWrite): Promise<void> {
    try {
      if (write.kind === 'write') await entry.target.internalWrite(write.offset, write.data!);
      else await entry.target.internalZero(write.offset, write.length);
    } catch (error) {
      // The host's write does not fail because the other storage did: the copy takes the tracks.
      const { first, last } = tracksOf(entry.vol.geometry, write.offset, write.length);
      entry.left.setRange(first, last);
      this.host.onError(error, { volume: entry.vol.name, target: entry.target.name, step: 'mirror' });
    }
  }

  // ---- background copy ----

  private resetProgress(entry: Running): void {
    entry.progress = { startedAtMs: this.host.nowMs(), tracksCopied: 0, bytesCopied: 0, sincePersist: 0 };
  }

  /** Does what the machine asks next. */
  private advance(entry: Running): void {
    if (entry.stopped) return;
    const action = entry.machine.poll(entry.left.count());
    switch (action.kind) {
      case 'copy':
        this.startCopying(entry);
        return;
      case 'cut-over':
        void this.cutOver(entry).catch((error: unknown) => this.host.onError(error, { volume: entry.vol.name, step: 'cut-over' }));
        return;
      case 'settle':
      case 'none':
        return;
    }
  }

  private copyTrack(entry: Running, track: number): Promise<void> {
    const running = entry.copying.get(track);
    if (running) return running;
    const job = (async () => {
      const { vol, target, left } = entry;
      const { offset, length } = trackRange(vol.geometry, track);
      // The copy takes its place in VOL's write order: no host write lands between the read and
      // the cleared bit, and none is overtaken (it reads what every earlier write left).
      const unlock = await vol.lockRange(offset, length);
      try {
        if (!left.test(track) || entry.stopped || !entry.machine.mirroring) return;
        const data = await vol.internalRead(offset, length);
        if (isAllZero(data)) await target.internalZero(offset, length);
        else await target.internalWrite(offset, data);
        left.clear(track);
        entry.unflushed.copied(track);
        entry.progress.tracksCopied++;
        entry.progress.bytesCopied += length;
        entry.progress.sincePersist++;
      } finally {
        unlock();
      }
    })();
    entry.copying.set(track, job);
    void job.finally(() => entry.copying.delete(track)).catch(() => undefined);
    return job;
  }

  private startCopying(entry: Running): void {
    if (entry.running || entry.stopped) return;
    entry.running = true;
    let cursor = 0;
    const worker = async (): Promise<void> => {
      for (;;) {
        if (entry.stopped || entry.pausedCopy || !entry.machine.mirroring) return;
        const next = entry.left.nextSet(cursor);
        if (next < 0) return;
        cursor = next + 1;
        await this.copyTrack(entry, next);
        if (entry.progress.sincePersist >= PERSIST_EVERY_TRACKS) {
          entry.progress.sincePersist = 0;
          await entry.vol.persistBitmaps();
        }
        // Host I/O goes first: one turn of the event loop between tracks.
        await this.host.pause(0);
      }
    };
    void Promise.all(Array.from({ length: COPY_CONCURRENCY }, worker))
      .then(async () => {
        entry.running = false;
        if (entry.stopped) return;
        if (entry.progress.sincePersist > 0) {
          entry.progress.sincePersist = 0;
          await entry.vol.persistBitmaps();
        }
        if (!entry.pausedCopy) this.advance(entry);
      })
      .catch((error: unknown) => {
        entry.running = false;
        this.host.onError(error, { volume: entry.vol.name, target: entry.target.name, step: 'copy' });
      });
  }

  /** Resumes work a race left undone (a write window paused a copy; a mirror failed). */
  kick(): void {
    for (const entry of this.active.values()) if (!entry.running && !entry.pausedCopy) this.advance(entry);
  }

  async close(): Promise<void> {
    this.stopKick();
    for (const entry of this.active.values()) entry.stopped = true;
    await Promise.allSettled([...this.active.values()].flatMap((e) => [...e.copying.values()]));
  }
}

/** The target's records and activity log (its storage file is VOL's storage now, or renamed already). */
async function dropTargetRecords(meta: MetaStore, journals: SlotJournalFactory, target: string): Promise<void> {
  await meta.delete(volumeKey(target));
  await meta.delete(bitmapsKey(target));
  await journals.remove(target);
}

function recordStatus(
  r: MigrationRecord, tracksLeft: number, trackCount: number,
  progress: { tracksCopied: number; bytesCopied: number; startedAtMs: number }, trackBytes: number, nowMs: number,
): MigrationStatus {
  const elapsed = Math.max(0.001, (nowMs - progress.startedAtMs) / 1000);
  const rate = progress.tracksCopied === 0 ? 0 : progress.bytesCopied / elapsed;
  const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
  return {
    volume: r.volume, target: r.target, state: r.state, manualCutover: r.manualCutover,
    servedFrom: r.state === 'copying' ? 'old' : 'new',
    tracksLeft, trackCount, tracksCopied: progress.tracksCopied, bytesCopied: progress.bytesCopied,
    percent: trackCount === 0 ? 100 : Math.floor((1000 * (trackCount - tracksLeft)) / trackCount) / 10,
    bytesPerSecond: Math.round(rate),
    etaSeconds: tracksLeft === 0 ? 0 : rate > 0 ? Math.ceil((tracksLeft * trackBytes) / rate) : null,
    tracksReplayed: r.tracksReplayed,
    startedAt: iso(r.startedAtMs), cutOverAt: iso(r.cutOverAtMs), detachedAt: iso(r.detachedAtMs),
  };
}
