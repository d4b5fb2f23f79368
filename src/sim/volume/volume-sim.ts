// One seeded run of the real Volume (src/app/volume/volume.ts) on simulated storage: a safety
// phase with concurrent host operations and crashes (each followed by recovery and a full check),
// then a liveness phase without faults that must drain, flush, shut down cleanly and reopen
// exactly equal to the model.
import { Prng } from '../../core/lib/prng.js';
import type { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { Volume, CHANGES_POSITION, type VolumeDeps } from '../../app/volume/volume.js';
import type { VolumeRecord } from '../../core/volume/volume-record.js';
import { Scheduler, SimStuckError } from '../scheduler.js';
import { SimDisk } from '../sim-disk.js';
import { SimMetaStore, SimSlotJournal } from '../sim-meta-store.js';
import { traced } from '../tracing-ports.js';
import { fenced, type Ports } from '../fenced-ports.js';
import { chooseConfig, HOST_OPS, type HostOp, type VolumeSimConfig } from './config.js';
import { VolumeModel, type Mutation } from './model.js';
import { ErrorCode, isTidemarkError } from '../../core/errors.js';
import { decodeUnits, makeData, UNIT_BYTES } from './pattern.js';

/** The ports a Volume gets; tests wrap them to build deliberately broken variants. */
export type VolumePorts = Ports;

export interface VolumeSeedOptions {
  readonly wrapPorts?: (ports: VolumePorts) => VolumePorts;
  /** Overrides parts of the seed's chosen configuration. */
  readonly configure?: (config: VolumeSimConfig) => VolumeSimConfig;
  /** Receives a line per host operation, crash and port call (slow; for reproducing one seed). */
  readonly trace?: (line: string) => void;
  /** Most scheduler events before the run is declared stuck. */
  readonly maxEvents?: number;
}

export interface VolumeSeedResult {
  readonly seed: number;
  readonly ok: boolean;
  /** What the oracle saw go wrong (with the phase), when !ok. */
  readonly failure?: string;
  readonly config: VolumeSimConfig;
  readonly hostOps: number;
  readonly crashes: number;
  readonly events: number;
  readonly virtualMs: number;
}

class OracleFailure extends Error {}

export async function runVolumeSeed(seed: number, options: VolumeSeedOptions = {}): Promise<VolumeSeedResult> {
  const sim = new VolumeSim(seed, options);
  let failure: string | undefined;
  try {
    await sim.run();
  } catch (error) {
    failure = `${sim.phase}: ${error instanceof OracleFailure ? error.message : String((error as Error)?.stack ?? error)}`;
  }
  return {
    seed,
    ok: failure === undefined,
    ...(failure === undefined ? {} : { failure }),
    config: sim.config,
    hostOps: sim.hostOps,
    crashes: sim.crashes,
    events: sim.scheduler.events,
    virtualMs: sim.scheduler.nowMs,
  };
}

class VolumeSim {
  readonly scheduler = new Scheduler();
  readonly config: VolumeSimConfig;
  phase = 'setup';
  hostOps = 0;
  crashes = 0;
  private readonly workload: Prng;
  private readonly faults: Prng;
  private readonly disk: SimDisk;
  private readonly meta: SimMetaStore;
  private readonly journal: SimSlotJournal;
  private readonly model: VolumeModel;
  private readonly record: VolumeRecord;
  private readonly ports: Ports;
  private volume: Volume | undefined;
  /** Bumped at every crash; completions from an older generation are ignored. */
  private generation = 0;
  private outstanding = 0;
  private readonly pendingOps = new Set<string>();
  private waiters: (() => void)[] = [];
  private failure: OracleFailure | undefined;
  private failed!: (error: OracleFailure) => void;
  private readonly failedPromise: Promise<never>;
  private readonly hotStart: number;
  private readonly totalWeight: number;

  constructor(readonly seed: number, private readonly options: VolumeSeedOptions) {
    const root = new Prng(seed);
    const chosen = chooseConfig(root.fork());
    this.config = options.configure ? options.configure(chosen) : chosen;
    this.workload = root.fork();
    this.faults = root.fork();
    const c = this.config;
    const trackCount = Math.ceil(c.sizeBytes / c.trackBytes);
    this.model = new VolumeModel(c.sizeBytes, c.trackBytes, trackCount);
    this.disk = new SimDisk(c.sizeBytes, this.scheduler, root.fork(), {
      onMutate: (offset, length) => this.model.diskMutated(offset, length),
    });
    this.meta = new SimMetaStore(this.scheduler, root.fork());
    this.journal = new SimSlotJournal(c.activityLog.slotCount + c.deltaSlots, c.activityLog.slotBytes, this.scheduler, root.fork());
    let ports: VolumePorts = { store: this.disk, meta: this.meta, journal: this.journal };
    if (options.wrapPorts) ports = options.wrapPorts(ports);
    if (options.trace) ports = traced(ports, (line) => this.trace(line));
    this.ports = ports;
    this.record = {
      name: 'sim', uuid: `sim-${seed}`, sizeBytes: c.sizeBytes, trackBytes: c.trackBytes, state: 'ready', createdAtMs: 0,
    };
    this.hotStart = this.workload.int(0, Math.max(0, this.model.units - c.hotUnits));
    this.totalWeight = HOST_OPS.reduce((n, op) => n + c.weights[op], 0);
    this.failedPromise = new Promise<never>((_, reject) => { this.failed = reject; });
    this.failedPromise.catch(() => undefined);
  }

  async run(): Promise<void> {
    const body = (async () => {
      this.volume = await Volume.open(this.record, this.deps());
      this.phase = 'safety';
      await this.hostPhase(this.config.safetyOps, this.config.crashBeforeOp);
      this.phase = 'liveness';
      await this.hostPhase(this.config.livenessOps, []);
      await this.livenessChecks();
    })();
    try {
      await this.scheduler.until(Promise.race([body, this.failedPromise]), () => `the ${this.phase} phase`,
        this.options.maxEvents ?? 300_000);
    } catch (error) {
      if (!(error instanceof SimStuckError)) throw error;
      // Stuck or livelocked: report what was still outstanding.
      throw new OracleFailure(`${(error as Error).message}; ${this.outstanding} host operations outstanding ` +
        `(${[...this.pendingOps].slice(0, 4).join('; ')}), volume hot extents ${this.volume?.hotExtents ?? '?'}`);
    }
  }

  private trace(line: string): void {
    this.options.trace?.(`${this.scheduler.nowMs.toFixed(3).padStart(9)} ${line}`);
  }

  /** Dependencies for a new incarnation of the volume: its I/O stops having effect at the next crash. */
  private deps(): VolumeDeps {
    const generation = this.generation;
    return {
      ...fenced(this.ports, () => generation === this.generation),
      activityLog: this.config.activityLog,
      nowMs: () => this.scheduler.nowMs,
    };
  }

  private fail(message: string): never {
    const error = new OracleFailure(message);
    if (!this.failure) {
      this.failure = error;
      this.failed(error);
    }
    throw error;
  }

  private get vol(): Volume {
    return this.volume!;
  }

  private async hostPhase(ops: number, crashBeforeOp: readonly number[]): Promise<void> {
    const crashes = [...crashBeforeOp];
    for (let i = 0; i < ops; i++) {
      while (crashes.length > 0 && crashes[0] === i) {
        crashes.shift();
        await this.crashAndRecover();
      }
      while (this.outstanding >= this.config.queueDepth) await new Promise<void>((r) => this.waiters.push(r));
      if (this.config.thinkMs > 0) await this.scheduler.sleep(this.workload.next() * 2 * this.config.thinkMs);
      this.issue(this.pickOp());
    }
  }

  private pickOp(): HostOp {
    let r = this.workload.next() * this.totalWeight;
    for (const op of HOST_OPS) {
      r -= this.config.weights[op];
      if (r < 0) return op;
    }
    return 'write';
  }

  private pickRange(): { firstUnit: number; units: number } {
    const total = this.model.units;
    const r = this.workload.next();
    const units = Math.min(total, 1 + Math.floor(this.config.maxUnits * r * r * r));
    let firstUnit: number;
    if (this.workload.chance(this.config.hotChance)) {
      firstUnit = this.hotStart + this.workload.int(0, this.config.hotUnits - 1);
    } else {
      firstUnit = this.workload.int(0, total - 1);
    }
    firstUnit = Math.max(0, Math.min(firstUnit, total - units));
    return { firstUnit, units };
  }

  private issue(op: HostOp): void {
    this.hostOps++;
    const { firstUnit, units } = this.pickRange();
    const offset = firstUnit * UNIT_BYTES;
    const length = units * UNIT_BYTES;
    const fua = this.workload.chance(this.config.fuaChance);
    const v = this.vol;
    const m = this.model;
    switch (op) {
      case 'write': {
        const mutation = m.issue('write', firstUnit, units, fua, this.oversized(firstUnit, units));
        this.track(`write #${mutation.id} ${offset}+${length}${fua ? ' FUA' : ''}`,
          v.write(offset, makeData(mutation.id, firstUnit, units), fua), () => this.acknowledge(mutation), this.refused(mutation));
        return;
      }
      case 'zero': {
        const mutation = m.issue('zero', firstUnit, units, fua, this.oversized(firstUnit, units));
        const allocate = this.workload.chance(0.5);
        this.track(`write-zeroes #${mutation.id} ${offset}+${length}`, v.writeZeroes(offset, length, allocate, fua),
          () => this.acknowledge(mutation), this.refused(mutation));
        return;
      }
      case 'trim': {
        const mutation = m.issue('trim', firstUnit, units, fua, this.oversized(firstUnit, units));
        this.track(`trim #${mutation.id} ${offset}+${length}`, v.trim(offset, length, fua), () => this.acknowledge(mutation),
          this.refused(mutation));
        return;
      }
      case 'read': {
        const ticket = m.beginRead(firstUnit, units);
        this.track(`read ${offset}+${length}`, v.read(offset, length), (bytes) => {
          const problem = m.checkRead(ticket, decodeUnits(bytes, firstUnit));
          if (problem) this.fail(`read ${offset}+${length}: ${problem}`);
        });
        return;
      }
      case 'flush': {
        const covered = m.flushIssued();
        this.track('flush', v.flush(), () => m.flushAcknowledged(covered));
        return;
      }
      case 'reset': {
        if (m.resetInProgress) return this.issue('read');
        m.resetIssued(this.disk.mutationsInFlight());
        this.track('reset changes', v.resetChanges(), () => m.resetAcknowledged());
        return;
      }
    }
  }

  private track<T>(what: string, promise: Promise<T>, onDone: (value: T) => void, expectedError?: (error: unknown) => boolean): void {
    const generation = this.generation;
    this.outstanding++;
    this.pendingOps.add(what);
    this.trace(`host ${what}`);
    promise.then((value) => {
      if (generation !== this.generation) return;
      this.trace(`host done ${what}`);
      this.pendingOps.delete(what);
      onDone(value);
      this.checkTrackerInMemory(what);
      this.completed();
    }, (error: unknown) => {
      if (generation !== this.generation) return;
      this.pendingOps.delete(what);
      if (expectedError?.(error)) {
        this.completed();
        return;
      }
      this.fail(`${what} failed: ${(error as Error)?.message ?? String(error)}`);
    }).catch(() => undefined);
  }

  /**
   * A mutation spanning more activity-log extents than may be hot at once may be refused with
   * TM_ERR_LIMIT_EXCEEDED (it could never be admitted whole); any other error is a failure.
   */
  private refused(mutation: Mutation): (error: unknown) => boolean {
    return (error) => {
      if (!isTidemarkError(error, ErrorCode.LimitExceeded) || !mutation.oversized) return false;
      this.model.refuse(mutation);
      return true;
    };
  }

  private oversized(firstUnit: number, units: number): boolean {
    const al = this.config.activityLog;
    const firstTrack = Math.floor((firstUnit * UNIT_BYTES) / this.config.trackBytes);
    const lastTrack = Math.floor(((firstUnit + units) * UNIT_BYTES - 1) / this.config.trackBytes);
    return Math.floor(lastTrack / al.extentTracks) - Math.floor(firstTrack / al.extentTracks) + 1 > al.maxActiveExtents;
  }

  private acknowledge(mutation: Mutation): void {
    this.model.acknowledge(mutation);
  }

  private completed(): void {
    this.outstanding--;
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w();
  }

  private checkTrackerInMemory(after: string): void {
    const missing = missingTracks(this.model.requiredNow, this.vol.position(CHANGES_POSITION).invalid);
    if (missing) this.fail(`after ${after}: the change tracker misses written tracks ${missing}`);
  }

  private crashAll(): void {
    this.trace('CRASH');
    this.volume?.abandon();
    this.generation++;
    this.disk.crash();
    this.meta.crash();
    this.journal.crash();
    this.model.crash();
    this.outstanding = 0;
    this.pendingOps.clear();
    this.waiters = [];
  }

  private async crashAndRecover(): Promise<void> {
    this.crashes++;
    this.phase = `crash ${this.crashes}`;
    this.crashAll();
    for (;;) {
      this.disk.reopen();
      this.journal.reopen();
      const opening = Volume.open(this.record, this.deps());
      opening.catch(() => undefined);
      if (!this.faults.chance(this.config.recoveryCrashChance)) {
        this.volume = await opening.catch((e: unknown) => this.fail(`recovery failed: ${(e as Error).message}`));
        break;
      }
      let cancelled = false;
      const interrupted = new Promise<undefined>((resolve) => {
        this.scheduler.at(this.faults.next() * 6, () => {
          if (cancelled) return;
          this.crashes++;
          this.crashAll();
          resolve(undefined);
        });
      });
      const opened = await Promise.race([opening, interrupted])
        .catch((e: unknown) => this.fail(`recovery failed: ${(e as Error).message}`));
      cancelled = true;
      if (opened) {
        this.volume = opened;
        break;
      }
    }
    this.phase = `recovery after crash ${this.crashes}`;
    const missing = this.model.checkRecoveredTracker(this.vol.position(CHANGES_POSITION).invalid);
    if (missing) this.fail(`the recovered change tracker misses written tracks ${summarize(missing.toArray())}`);
    const bytes = await this.vol.read(0, this.config.sizeBytes);
    const problem = this.model.reconcile(decodeUnits(bytes, 0));
    if (problem) this.fail(problem);
    this.phase = 'safety';
  }

  private async drain(): Promise<void> {
    while (this.outstanding > 0) await new Promise<void>((r) => this.waiters.push(r));
  }

  /** Reads the whole volume with nothing in flight and checks it against the model. */
  private async checkWholeVolume(when: string): Promise<Int32Array> {
    const got = decodeUnits(await this.vol.read(0, this.config.sizeBytes), 0);
    const problem = this.model.checkQuiet(got);
    if (problem) this.fail(`${when}: ${problem}`);
    return got;
  }

  private async livenessChecks(): Promise<void> {
    this.phase = 'liveness drain';
    await this.drain();
    const covered = this.model.flushIssued();
    await this.vol.flush();
    this.model.flushAcknowledged(covered);
    const flushed = await this.checkWholeVolume('after the final flush');
    this.phase = 'clean shutdown';
    await this.vol.close();
    const hot = this.vol.hotExtents;
    if (hot !== 0) this.fail(`${hot} extents still hot after close`);
    // Power off after a clean close: nothing may be lost, and recovery must find a clean log.
    this.crashAll();
    this.disk.reopen();
    this.journal.reopen();
    this.volume = await Volume.open(this.record, this.deps());
    if (this.vol.recovery.crashed) this.fail('a cleanly closed volume recovered as crashed');
    const missing = missingTracks(this.model.required, this.vol.position(CHANGES_POSITION).invalid);
    if (missing) this.fail(`after a clean shutdown the change tracker misses written tracks ${missing}`);
    const reopened = decodeUnits(await this.vol.read(0, this.config.sizeBytes), 0);
    for (let u = 0; u < reopened.length; u++) {
      if (reopened[u] !== flushed[u]) {
        this.fail(`after a clean shutdown unit ${u} holds content ${reopened[u]}, before it held ${flushed[u]}`);
      }
    }
    await this.vol.close();
    this.phase = 'done';
  }
}

/** Tracks set in `required` but not in `actual`, summarised (undefined when none). */
function missingTracks(required: TrackBitmap, actual: TrackBitmap): string | undefined {
  if (required.isSubsetOf(actual)) return undefined;
  return summarize(required.copy().andNot(actual).toArray());
}

function summarize(tracks: readonly number[]): string {
  return tracks.length > 8 ? `${tracks.slice(0, 8).join(', ')} … (${tracks.length} in all)` : tracks.join(', ');
}
