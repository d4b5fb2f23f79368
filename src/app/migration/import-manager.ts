// Online imports of one array (SPEC §8; docs/design/migration.md): a volume created from another NBD
// server's export and served at once. Reads and writes of tracks not fetched yet fetch them first
// (the 'import' position in the volume's write plan), a paced background copy fetches the rest, and
// with --write-back the volume's writes reach the source before they are acknowledged. The
// decisions are the core machine's (core/migration/import-machine.ts); this module executes them.
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError, invalidArgument, notFound } from '../../core/errors.js';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import { ImportMachine, parseImportRecord, type ImportRecord } from '../../core/migration/import-machine.js';
import { parseNbdUrl } from '../../core/nbd/nbd-url.js';
import { DEFAULT_TRACK_BYTES, makeGeometry, trackRange } from '../../core/volume/geometry.js';
import type { PlanStep } from '../../core/volume/write-plan.js';
import type { ImportSource, ImportSourceConnector } from '../../ports/import-source.js';
import type { Timers } from '../../ports/timers.js';
import type { MetaStore } from '../../ports/meta-store.js';
import type { AppliedWrite, Volume, WriteParticipant } from '../volume/volume.js';
import { UnflushedCopies } from '../volume/unflushed-copies.js';
import type { ImportStatus } from '../../adapters/http/import-routes.js';
import { isAllZero } from './zero-data.js';

const RECORD_PREFIX = 'import/';
const recordKey = (name: string): string => `${RECORD_PREFIX}${name}`;
const POSITION_ID = 'import:source';
const COPY_CONCURRENCY = 16;
const PERSIST_EVERY_TRACKS = 512;

export interface ImportHost {
  readonly meta: MetaStore;
  /** Connects to a source; undefined: this array cannot import (no client wired). */
  readonly connect: ImportSourceConnector | undefined;
  createVolume(name: string, sizeBytes: number, trackBytes: number): Promise<unknown>;
  volume(name: string): Volume;
  findVolume(name: string): Volume | undefined;
  nowMs(): number;
  /** The event loop's timers in the daemon, virtual time in the simulator. */
  readonly timers: Timers;
  /** Waits `ms` (0: one turn, so host I/O goes first). */
  pause(ms: number): Promise<void>;
  onError(error: unknown, context: Record<string, unknown>): void;
  onEvent(message: string, fields: Record<string, unknown>): void;
}

interface Importing {
  readonly machine: ImportMachine;
  readonly volume: Volume;
  readonly left: TrackBitmap;
  /** Fetched tracks whose cleared bits are not durable yet. */
  readonly fetchedNotDurable: TrackBitmap;
  /** Fetches no completed flush of the volume covers yet (persisted as still to fetch). */
  readonly unflushed: UnflushedCopies;
  readonly fetching: Map<number, Promise<void>>;
  readonly participant: WriteParticipant;
  readonly beforePersist: () => Promise<void>;
  source: ImportSource | undefined;
  connecting: Promise<ImportSource> | undefined;
  lastError: string | null;
  running: boolean;
  stopped: boolean;
  progress: { startedAtMs: number; tracksCopied: number; bytesCopied: number; sincePersist: number };
}

export class ImportManager {
  private readonly active = new Map<string, Importing>();
  private readonly finished = new Map<string, ImportRecord>();
  private recordWrites: Promise<void> = Promise.resolve();
  /** Names with a start under way (a second start of one name is refused, not raced). */
  private readonly starting = new Set<string>();
  private readonly stopKick: () => void;

  constructor(private readonly host: ImportHost) {
    this.stopKick = host.timers.every(500, () => this.kick());
  }

  async load(): Promise<void> {
    for (const key of await this.host.meta.list(RECORD_PREFIX)) {
      const bytes = await this.host.meta.read(key);
      if (!bytes) continue;
      const record = parseImportRecord(decodeJson(bytes, key), key);
      if (record.state === 'finished') {
        this.finished.set(record.name, record);
        continue;
      }
      const volume = this.host.findVolume(record.name);
      if (!volume) {
        // The start did not get as far as creating the volume: nothing was imported.
        await this.host.meta.delete(key);
        continue;
      }
      this.attach(volume, new ImportMachine(record));
    }
    for (const entry of this.active.values()) this.advance(entry);
  }

  private attach(volume: Volume, machine: ImportMachine): Importing {
    let position = volume.findPosition(POSITION_ID);
    if (!position) {
      position = { id: POSITION_ID, kind: 'import', marksOn: 'never', invalid: TrackBitmap.full(volume.geometry.trackCount) };
      volume.addPosition(position);
    }
    // Never marked by writes or crash recovery: a set bit means "fetch from the source", which
    // over a host write would lose it.
    position.marksOn = 'never';
    const left = position.invalid;
    const fetchedNotDurable = new TrackBitmap(volume.geometry.trackCount);
    const entry: Importing = {
      machine, volume, left, fetchedNotDurable, unflushed: new UnflushedCopies(volume.geometry.trackCount), fetching: new Map(),
      source: undefined, connecting: undefined,
      lastError: null, running: false, stopped: false,
      progress: { startedAtMs: this.host.nowMs(), tracksCopied: 0, bytesCopied: 0, sincePersist: 0 },
      participant: {
        positions: (into) => {
          if (!entry.stopped) into.push({ kind: 'import', id: POSITION_ID, left, fetchedNotDurable, writeBack: machine.record.writeBack });
        },
        execute: (step, _position, write) => this.execute(entry, step, write),
      },
      // Fetched data is durable before the bits saying it is there are.
      beforePersist: async () => {
        if (!entry.stopped) await UnflushedCopies.flushCovering([entry.unflushed], () => entry.volume.internalFlush());
      },
    };
    volume.participants.push(entry.participant);
    volume.beforePersist.push(entry.beforePersist);
    entry.unflushed.overlay(volume, POSITION_ID);
    this.active.set(volume.name, entry);
    return entry;
  }

  /**
   * One record write at a time, in call order: two writes of one key in flight may complete in
   * either order, and an older state landing last (copied after finished) would resurrect the import.
   */
  private writeRecord(record: ImportRecord): Promise<void> {
    const run = this.recordWrites.then(() => this.host.meta.write(recordKey(record.name), encodeJson(record)));
    this.recordWrites = run.catch(() => undefined);
    return run;
  }

  checkVolumeChange(name: string, what: string): void {
    if (this.active.has(name)) {
      throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${name} is being imported; ${what} is refused (finish the import first)`, { volume: name });
    }
  }

  // ---- commands ----

  async start(name: string, url: string, writeBack: boolean, maxBytesPerSecond: number | null): Promise<ImportStatus> {
    if (!this.host.connect) throw new TidemarkError(ErrorCode.Unsupported, 'this array has no NBD client for imports');
    parseNbdUrl(url);
    if (maxBytesPerSecond !== null && !(maxBytesPerSecond > 0)) throw invalidArgument('the rate cap must be positive');
    if (this.host.findVolume(name) || this.starting.has(name)) {
      throw new TidemarkError(ErrorCode.AlreadyExists, `volume ${name} already exists`, { volume: name });
    }
    this.starting.add(name);
    let source: ImportSource;
    try {
      source = await this.host.connect(url);
    } catch (error) {
      this.starting.delete(name);
      throw error;
    }
    let handedOver = false;
    try {
      if (writeBack && !source.writable) throw invalidArgument(`source ${url} is read-only: --write-back needs a writable export`);
      makeGeometry(source.sizeBytes, DEFAULT_TRACK_BYTES);
      const machine = new ImportMachine({
        name, source: url, sizeBytes: source.sizeBytes, writeBack, state: 'copying', startedAtMs: Math.floor(this.host.nowMs()),
        maxBytesPerSecond,
      });
      // The record first: a crash before the volume exists drops it at the next start.
      await this.writeRecord(machine.record);
      this.finished.delete(name);
      try {
        await this.host.createVolume(name, source.sizeBytes, DEFAULT_TRACK_BYTES);
      } catch (error) {
        // No volume, no import (a name taken meanwhile, a bad name): the record goes too.
        await this.host.meta.delete(recordKey(name)).catch(() => undefined);
        throw error;
      }
      // Attached before anything else can run: no host sees the empty volume without the import.
      const entry = this.attach(this.host.volume(name), machine);
      entry.source = source;
      handedOver = true;
      await entry.volume.persistBitmaps();
      this.host.onEvent('import started', { volume: name, source: url, writeBack, sizeBytes: source.sizeBytes });
      this.advance(entry);
      return this.status(entry);
    } finally {
      this.starting.delete(name);
      if (!handedOver) source.close();
    }
  }

  async finish(name: string): Promise<ImportStatus> {
    const entry = this.active.get(name);
    if (!entry) {
      if (this.finished.has(name)) throw new TidemarkError(ErrorCode.InvalidState, `the import of ${name} is already finished`, { volume: name });
      throw notFound(`volume ${name} is not being imported`, { volume: name });
    }
    const record = entry.machine.record;
    if (record.state !== 'copied') entry.machine.finish(); // throws with the reason
    const release = await entry.volume.holdWrites();
    try {
      // With write-back the source is a fallback: what it was sent is made durable there first.
      if (record.writeBack) await (await this.sourceOf(entry)).flush();
      const next = entry.machine.finish();
      await this.writeRecord(next);
      entry.stopped = true;
      const { volume } = entry;
      const p = volume.participants.indexOf(entry.participant);
      if (p >= 0) volume.participants.splice(p, 1);
      const b = volume.beforePersist.indexOf(entry.beforePersist);
      if (b >= 0) volume.beforePersist.splice(b, 1);
      volume.setPersistOverlay(POSITION_ID, undefined);
      volume.removePosition(POSITION_ID);
      await volume.persistBitmaps();
      this.active.delete(name);
      this.finished.set(name, next);
    } finally {
      release();
    }
    entry.source?.close();
    this.host.onEvent('import finished', { volume: name });
    return this.show(name);
  }

  show(name: string): ImportStatus {
    const entry = this.active.get(name);
    if (entry) return this.status(entry);
    const done = this.finished.get(name);
    if (done) return recordStatus(done, 0, 0, { tracksCopied: 0, bytesCopied: 0, startedAtMs: 0 }, 0, this.host.nowMs(), false, null);
    throw notFound(`volume ${name} is not being imported`, { volume: name });
  }

  list(): ImportStatus[] {
    return [...new Set([...this.active.keys(), ...this.finished.keys()])].sort().map((n) => this.show(n));
  }

  private status(e: Importing): ImportStatus {
    return recordStatus(e.machine.record, e.left.count(), e.volume.geometry.trackCount, e.progress, e.volume.geometry.trackBytes,
      this.host.nowMs(), e.source?.alive === true, e.lastError);
  }

  // ---- the volume's plan: the import as a position ----

  private execute(entry: Importing, step: PlanStep, write: AppliedWrite | undefined): Promise<void> | undefined {
    switch (step.kind) {
      case 'fetch':
        return step.durable ? this.fetchBeforeWrite(entry, step.first, step.last) : this.fetchRange(entry, step.first, step.last);
      case 'forward':
        return this.forward(entry, write!);
      case 'flush-mirror':
        return this.sourceOf(entry).then((s) => s.flush()).catch((error: unknown) => this.sourceError(entry, error));
      default:
        throw new Error(`imports do not execute ${step.kind} steps`);
    }
  }

  private async fetchRange(entry: Importing, first: number, last: number): Promise<void> {
    const jobs: Array<Promise<void>> = [];
    for (let t = entry.left.nextSet(first); t !== -1 && t <= last; t = entry.left.nextSet(t + 1)) jobs.push(this.fetchTrack(entry, t));
    await Promise.all(jobs);
  }

  /** Before a write: the tracks are fetched and their cleared bits durable (a crash must not fetch them over it). */
  private async fetchBeforeWrite(entry: Importing, first: number, last: number): Promise<void> {
    await this.fetchRange(entry, first, last);
    if (entry.fetchedNotDurable.anyInRange(first, last)) {
      const snapshot = entry.fetchedNotDurable.copy();
      await entry.volume.persistBitmaps();
      entry.fetchedNotDurable.andNot(snapshot);
    }
  }

  private async forward(entry: Importing, write: AppliedWrite): Promise<void> {
    const source = await this.sourceOf(entry).catch((error: unknown) => this.sourceError(entry, error));
    try {
      if (write.kind === 'write') await source.write(write.offset, write.data!);
      else await source.writeZeroes(write.offset, write.length);
    } catch (error) {
      return this.sourceError(entry, error);
    }
  }

  private sourceError(entry: Importing, error: unknown): never {
    entry.lastError = (error as Error).message;
    entry.machine.sourceFailed(this.host.nowMs());
    throw error instanceof TidemarkError ? error
      : new TidemarkError(ErrorCode.Unavailable, `source of ${entry.volume.name} failed: ${(error as Error).message}`);
  }

  /** The source connection, (re)connecting when it failed; its size must still be the volume's. */
  private sourceOf(entry: Importing): Promise<ImportSource> {
    if (entry.source?.alive) return Promise.resolve(entry.source);
    if (entry.connecting) return entry.connecting;
    const record = entry.machine.record;
    const connecting = (async () => {
      const source = await this.host.connect!(record.source);
      if (source.sizeBytes !== record.sizeBytes) {
        source.close();
        throw new TidemarkError(ErrorCode.InvalidState,
          `source ${record.source} now has ${source.sizeBytes} bytes, the import started with ${record.sizeBytes}; refusing to read it`);
      }
      if (record.writeBack && !source.writable) {
        source.close();
        throw new TidemarkError(ErrorCode.InvalidState, `source ${record.source} is read-only now; the import writes back`);
      }
      entry.source?.close();
      entry.source = source;
      entry.lastError = null;
      entry.machine.sourceAnswered();
      return source;
    })();
    entry.connecting = connecting;
    void connecting.finally(() => { entry.connecting = undefined; }).catch(() => undefined);
    return connecting;
  }

  /**
   * One track from the source into the volume. Host reads and writes of the track wait for this
   * same job (one per track), so the fetched bytes never land over a host write: a write reaches
   * the track only after its bit is clear, and then nothing fetches it again.
   */
  private fetchTrack(entry: Importing, track: number): Promise<void> {
    const running = entry.fetching.get(track);
    if (running) return running;
    const job = (async () => {
      if (!entry.left.test(track) || entry.stopped) return;
      const { offset, length } = trackRange(entry.volume.geometry, track);
      let data: Uint8Array;
      try {
        const source = await this.sourceOf(entry);
        data = await source.read(offset, length);
      } catch (error) {
        this.sourceError(entry, error);
      }
      if (data.length !== length) throw new TidemarkError(ErrorCode.Protocol, `source returned ${data.length} bytes for ${length}`);
      if (isAllZero(data)) await entry.volume.internalZero(offset, length, { skipPosition: POSITION_ID });
      else await entry.volume.internalWrite(offset, data, { skipPosition: POSITION_ID });
      entry.left.clear(track);
      entry.fetchedNotDurable.set(track);
      entry.unflushed.copied(track);
      entry.progress.tracksCopied++;
      entry.progress.bytesCopied += length;
      entry.progress.sincePersist++;
    })();
    entry.fetching.set(track, job);
    void job.finally(() => entry.fetching.delete(track)).catch(() => undefined);
    return job;
  }

  // ---- background copy ----

  private advance(entry: Importing): void {
    if (entry.stopped || entry.running) return;
    const action = entry.machine.poll(entry.left.count(), this.host.nowMs());
    switch (action.kind) {
      case 'copy':
        this.startCopying(entry);
        return;
      case 'copied':
        void this.markCopied(entry).catch((error: unknown) => this.host.onError(error, { volume: entry.volume.name, step: 'copied' }));
        return;
      case 'none':
        return;
    }
  }

  private async markCopied(entry: Importing): Promise<void> {
    entry.running = true;
    try {
      await entry.volume.persistBitmaps();
      entry.fetchedNotDurable.clearAll();
      if (entry.machine.state !== 'copying' || entry.left.count() !== 0) return;
      const record = entry.machine.copied(0);
      await this.writeRecord(record);
      this.host.onEvent('import copied', { volume: record.name });
    } finally {
      entry.running = false;
    }
  }

  private startCopying(entry: Importing): void {
    entry.running = true;
    let cursor = 0;
    const cap = entry.machine.record.maxBytesPerSecond;
    const paceStart = this.host.nowMs();
    let paced = 0;
    const worker = async (): Promise<void> => {
      for (;;) {
        // A source failure ends this run (the fetch throws); the machine says when to try again.
        if (entry.stopped) return;
        const next = entry.left.nextSet(cursor);
        if (next < 0) return;
        cursor = next + 1;
        await this.fetchTrack(entry, next);
        paced += entry.volume.geometry.trackBytes;
        if (entry.progress.sincePersist >= PERSIST_EVERY_TRACKS) {
          entry.progress.sincePersist = 0;
          const snapshot = entry.fetchedNotDurable.copy();
          await entry.volume.persistBitmaps();
          entry.fetchedNotDurable.andNot(snapshot);
        }
        // Host I/O first: a turn of the event loop between tracks, and the cap if one is set.
        const due = cap === null ? 0 : paceStart + (paced / cap) * 1000 - this.host.nowMs();
        await this.host.pause(Math.max(0, due));
      }
    };
    void Promise.all(Array.from({ length: COPY_CONCURRENCY }, worker))
      .catch((error: unknown) => {
        if (!(error instanceof TidemarkError && error.code === ErrorCode.Unavailable)) {
          this.host.onError(error, { volume: entry.volume.name, step: 'import copy' });
        }
      })
      .finally(() => {
        entry.running = false;
        if (!entry.machine.sourceDown) this.advance(entry);
      });
  }

  /** Retries a copy the source interrupted, and resumes any that a race left idle. */
  kick(): void {
    for (const entry of this.active.values()) this.advance(entry);
  }

  async close(): Promise<void> {
    this.stopKick();
    for (const entry of this.active.values()) entry.stopped = true;
    await Promise.allSettled([...this.active.values()].flatMap((e) => [...e.fetching.values()]));
    for (const entry of this.active.values()) entry.source?.close();
  }
}

function recordStatus(
  r: ImportRecord, tracksLeft: number, trackCount: number,
  progress: { tracksCopied: number; bytesCopied: number; startedAtMs: number }, trackBytes: number, nowMs: number,
  sourceConnected: boolean, lastError: string | null,
): ImportStatus {
  const elapsed = Math.max(0.001, (nowMs - progress.startedAtMs) / 1000);
  const rate = progress.tracksCopied === 0 ? 0 : progress.bytesCopied / elapsed;
  return {
    name: r.name, source: r.source, sizeBytes: r.sizeBytes, writeBack: r.writeBack, state: r.state,
    tracksLeft, trackCount, tracksCopied: progress.tracksCopied, bytesCopied: progress.bytesCopied,
    percent: trackCount === 0 ? 100 : Math.floor((1000 * (trackCount - tracksLeft)) / trackCount) / 10,
    bytesPerSecond: Math.round(rate),
    etaSeconds: tracksLeft === 0 ? 0 : rate > 0 ? Math.ceil((tracksLeft * trackBytes) / rate) : null,
    maxBytesPerSecond: r.maxBytesPerSecond, sourceConnected, lastError,
    startedAt: new Date(r.startedAtMs).toISOString(),
  };
}
