// One seeded run of a remote pair: two simulated arrays (east holds R1, west holds R2), each with
// the real Volume, PeerRpc and PairManager on simulated disks and metadata, joined by simulated
// links. A safety phase issues concurrent host writes to R1 while the link is partitioned and
// healed and either array is killed and restarted; then a liveness phase heals everything and the
// pair must converge.
//
// Oracle (outside the system): every write carries its id in each 4 KiB unit, ids grow in issue
// order, and overlapping writes apply in issue order.
// - Sync pair that fails writes it cannot replicate: at every moment, each unit of R2 holds the
//   last acknowledged write to it or a later one — an acknowledged write is never missing from R2,
//   and R2 never goes back to older data (no loss, no duplicate or out-of-order application).
// - Every pair: after the liveness phase R2 equals R1 byte for byte, and once idle R1's bitmap
//   is clean on disk (its flush rounds made R2 durable and cleared the bits; hosts never flush).
// Some seeds also fan out: R1's volume is the R1 of a second pair, named db-n, to a third array
// (north) in another mode; it goes through the same partitions and R1 crashes, and after the
// liveness phase north equals R1 too.
import { Prng } from '../../core/lib/prng.js';
import { isTidemarkError } from '../../core/errors.js';
import type { PairMode, LinkFailurePolicy } from '../../core/replication/pair-record.js';
import type { ByteExtent } from '../../core/replication/pair-extents.js';
import type { VolumeRecord } from '../../core/volume/volume-record.js';
import { Volume, volumeKey, type VolumeDeps } from '../../app/volume/volume.js';
import { PeerRpc } from '../../app/replication/peer-rpc.js';
import { PairManager } from '../../app/replication/pair-manager.js';
import { DEFAULT_CLEAN_ROUND } from '../../core/replication/clean-round.js';
import type { Timers } from '../../ports/timers.js';
import type { PeerLinks } from '../../ports/peer-transport.js';
import { Scheduler, SimStuckError } from '../scheduler.js';
import { SimDisk } from '../sim-disk.js';
import { SimMetaStore, SimSlotJournal } from '../sim-meta-store.js';
import { SimSpillStore } from '../sim-spill-store.js';
import { SimLinks } from '../sim-links.js';
import { fenced } from '../fenced-ports.js';

const UNIT = 4096;
const TRACK_BYTES = 16 * 1024;

export interface PairSimConfig {
  readonly mode: PairMode;
  readonly onLinkFailure: LinkFailurePolicy;
  readonly sizeBytes: number;
  readonly writes: number;
  readonly maxConcurrent: number;
  readonly maxUnitsPerWrite: number;
  /** Per write: chances of a fault before it. */
  readonly partitionChance: number;
  readonly crashChance: number;
  /** Crashes lose unflushed writes (power loss) instead of only the process. */
  readonly powerLoss: boolean;
  /** The pair replicates only these byte ranges (whole tracks); null: all of it. */
  readonly extents: ByteExtent[] | null;
  /** async: R1's cycle memory and spill limit (not drawn: set by a configure function; default the pair's). */
  readonly cycleMemoryBytes?: number;
  readonly spillLimitBytes?: number;
  /** A second pair on R1's volume, to a third array, in this mode (fan-out); null: none. */
  readonly fanOut?: PairMode | null;
  /** R1's flush rounds: when shipped-but-unflushed data is this old or this large. */
  readonly cleanAfterMs: number;
  readonly cleanAfterBytes: number;
}

export function choosePairConfig(prng: Prng): PairSimConfig {
  const mode: PairMode = prng.pick(['sync', 'sync', 'semisync', 'adaptive'] as const);
  const drawn: Omit<PairSimConfig, 'extents' | 'cleanAfterMs' | 'cleanAfterBytes'> = {
    mode,
    onLinkFailure: mode === 'sync' && prng.chance(0.6) ? 'fail-writes' : 'continue',
    sizeBytes: prng.int(8, 64) * TRACK_BYTES,
    writes: prng.int(20, 120),
    maxConcurrent: prng.int(1, 6),
    maxUnitsPerWrite: prng.int(1, 8),
    partitionChance: prng.pick([0, 0.03, 0.08]),
    crashChance: prng.pick([0, 0.02, 0.05]),
    powerLoss: prng.chance(0.3),
  };
  // Drawn last, so seeds pinned before extents existed keep their configuration.
  let extents: ByteExtent[] | null = null;
  if (prng.chance(0.25)) {
    const tracks = drawn.sizeBytes / TRACK_BYTES;
    const first = prng.int(0, tracks - 2);
    const second = prng.int(first + 1, tracks - 1);
    extents = [{ offset: first * TRACK_BYTES, length: TRACK_BYTES * prng.int(1, second - first) },
      { offset: second * TRACK_BYTES, length: (tracks - second) * TRACK_BYTES }];
  }
  // Also drawn after the rest: some semi-sync seeds run ordered async cycles instead.
  const finalMode: PairMode = drawn.mode === 'semisync' && prng.chance(0.6) ? 'async' : drawn.mode;
  // Drawn last too: a second pair on the volume (fan-out) in some seeds.
  const fanOut = prng.chance(0.2) ? prng.pick(['sync', 'semisync', 'adaptive', 'async'] as const) : null;
  // Drawn after that. Rounds far more often than the daemon's (~1 s, tens of MiB) so that they meet
  // writes, partitions and crashes in runs that last a few hundred virtual ms.
  const cleanAfterMs = prng.pick([5, 20, 80, 1000]);
  const cleanAfterBytes = prng.pick([4096, 32 * 1024, 64 * 1024 * 1024]);
  return { ...drawn, mode: finalMode, extents, fanOut, cleanAfterMs, cleanAfterBytes };
}

export const describePairConfig = (c: PairSimConfig): string =>
  `${c.mode}/${c.onLinkFailure}, ${c.sizeBytes / 1024} KiB, ${c.writes} writes ×≤${c.maxConcurrent}, ` +
  `partition ${c.partitionChance}, crash ${c.crashChance}${c.powerLoss ? ' (power loss)' : ''}` +
  (c.extents ? `, extents ${c.extents.map((e) => `${e.offset / TRACK_BYTES}+${e.length / TRACK_BYTES}`).join(',')} tracks` : '') +
  (c.fanOut ? `, fan-out ${c.fanOut} to north` : '') +
  `, clean after ${c.cleanAfterMs} ms/${c.cleanAfterBytes / 1024} KiB`;

export interface PairSeedResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly failure?: string;
  readonly config: PairSimConfig;
  readonly acked: number;
  readonly crashes: number;
  readonly partitions: number;
  readonly events: number;
  readonly virtualMs: number;
  /** Writes R1's cycles made to their spill store. */
  readonly spillWrites: number;
  /** Flush rounds R1 started on its own (all its incarnations). */
  readonly flushRounds: number;
}

class OracleFailure extends Error {}

function schedulerTimers(scheduler: Scheduler, alive: () => boolean): Timers {
  return {
    after(ms, fire) {
      let cancelled = false;
      scheduler.at(ms, () => { if (!cancelled && alive()) fire(); });
      return () => { cancelled = true; };
    },
    every(ms, fire) {
      let cancelled = false;
      const tick = (): void => {
        if (cancelled || !alive()) return;
        fire();
        scheduler.at(ms, tick);
      };
      scheduler.at(ms, tick);
      return () => { cancelled = true; };
    },
  };
}

/** One array of the simulation: its devices survive crashes, its processes do not. */
class SimArray {
  readonly disk: SimDisk;
  readonly meta: SimMetaStore;
  readonly journal: SimSlotJournal;
  readonly spill: SimSpillStore;
  generation = 0;
  volume: Volume | undefined;
  pairs: PairManager | undefined;
  rpc: PeerRpc | undefined;
  linkEndpoint: PeerLinks | undefined;
  /** Flush rounds of the pair halves of earlier incarnations. */
  private earlierFlushRounds = 0;

  get flushRounds(): number {
    const pairs = this.pairs;
    return this.earlierFlushRounds + (pairs?.isPaired(this.volumeName) ? pairs.runtime(this.volumeName).counters.flushRounds : 0);
  }

  constructor(
    readonly name: string,
    readonly peers: readonly string[],
    readonly volumeName: string,
    readonly sizeBytes: number,
    private readonly scheduler: Scheduler,
    private readonly links: SimLinks,
    prng: Prng,
    private readonly onError: (error: unknown) => void,
  ) {
    this.disk = new SimDisk(sizeBytes, scheduler, prng.fork());
    this.meta = new SimMetaStore(scheduler, prng.fork());
    // Four activity-log slots (below), then eight of bitmap deltas.
    this.journal = new SimSlotJournal(4 + 8, 4096, scheduler, prng.fork());
    // Forked last: the draws of seeds pinned before spill existed stay as they were.
    this.spill = new SimSpillStore(scheduler, prng.fork());
  }

  async start(seed: number, clean: { cleanAfterMs: number; cleanAfterBytes: number }): Promise<void> {
    const generation = this.generation;
    const alive = (): boolean => generation === this.generation;
    const deps: VolumeDeps = {
      ...fenced({ store: this.disk, meta: this.meta, journal: this.journal }, alive),
      activityLog: { slotCount: 4, slotBytes: 4096, maxActiveExtents: 16, extentTracks: 2 },
      nowMs: () => this.scheduler.nowMs,
    };
    const stored = await deps.meta.read(volumeKey(this.volumeName));
    const record: VolumeRecord = stored
      ? JSON.parse(new TextDecoder().decode(stored)) as VolumeRecord
      : { name: this.volumeName, uuid: `sim-${this.name}`, sizeBytes: this.sizeBytes, trackBytes: TRACK_BYTES, state: 'ready', createdAtMs: 0 };
    // Hosts reach the volume only once the array has started (pairs loaded), as with the daemon.
    const volume = await Volume.open(record, deps);
    const links = this.links.endpoint(this.name);
    this.linkEndpoint = links;
    const timers = schedulerTimers(this.scheduler, alive);
    this.rpc = new PeerRpc(links, (error) => this.onError(error), timers, `${this.name}-${generation}`);
    this.pairs = new PairManager({
      arrayName: this.name,
      volume: () => volume,
      findVolume: (n) => (n === this.volumeName ? volume : undefined),
      checkPeer: () => undefined,
      peerLinkState: (p) => links.peerState(p),
      nowMs: () => this.scheduler.nowMs,
      onError: (error) => this.onError(error),
      onEvent: () => undefined,
      timers,
      meta: deps.meta,
      spill: this.spill,
      randomId: () => `s${seed}`,
    }, this.rpc, {
      writeAckMs: 5000, copyAckMs: 10_000, cleanRound: { ...DEFAULT_CLEAN_ROUND, ...clean, retryAfterMs: 50, maxRetryMs: 400 },
      // Volumes of 8–64 tracks: short runs, so pushes take runs of holes first as on a real volume.
      holeRunTracks: 4,
    });
    const pairs = this.pairs;
    links.onPeerUp((p) => { void pairs.peerUp(p); });
    links.onPeerDown((p) => pairs.peerDown(p));
    links.onSessionReset((p) => pairs.sessionReset(p));
    await this.pairs.load([this.volumeName]);
    this.volume = volume;
    for (const peer of this.peers) links.addPeer({ name: peer, address: 'sim', secret: new Uint8Array(16) });
  }

  /** The process dies: nothing more it does has effect; with power loss, unflushed data is lost too. */
  crash(powerLoss: boolean): void {
    this.earlierFlushRounds = this.flushRounds;
    this.generation++;
    this.links.drop(this.name);
    void this.pairs?.close();
    this.rpc?.close();
    this.volume?.abandon();
    this.volume = undefined;
    if (powerLoss) this.disk.crash();
    else this.disk.processExit();
    // Metadata and journal writes in flight happened or not (they model durable storage only).
    this.meta.crash();
    this.journal.crash();
    this.spill.crash();
    this.disk.reopen();
    this.journal.reopen();
  }
}

export async function runPairSeed(seed: number, configure?: (c: PairSimConfig) => PairSimConfig,
  trace?: (line: string) => void): Promise<PairSeedResult> {
  const sim = new PairSim(seed, configure, trace);
  let failure: string | undefined;
  try {
    await sim.run();
  } catch (error) {
    failure = `${sim.phase}: ${error instanceof OracleFailure ? error.message : String((error as Error)?.stack ?? error)}`;
  }
  return {
    seed, ok: failure === undefined, ...(failure === undefined ? {} : { failure }), config: sim.config,
    acked: sim.acked, crashes: sim.crashes, partitions: sim.partitions, events: sim.scheduler.events, virtualMs: sim.scheduler.nowMs,
    spillWrites: sim.spillWrites, flushRounds: sim.flushRounds,
  };
}

class PairSim {
  readonly scheduler = new Scheduler();
  readonly config: PairSimConfig;
  phase = 'setup';
  acked = 0;
  crashes = 0;
  partitions = 0;
  private readonly workload: Prng;
  private readonly faults: Prng;
  private readonly links: SimLinks;
  private readonly east: SimArray;
  private readonly west: SimArray;
  /** The fan-out target (config.fanOut), never crashed. */
  private readonly north: SimArray | undefined;

  get spillWrites(): number {
    return this.east.spill.writes + this.west.spill.writes;
  }

  get flushRounds(): number {
    return this.east.flushRounds + this.west.flushRounds;
  }

  private get cleanConfig(): { cleanAfterMs: number; cleanAfterBytes: number } {
    return { cleanAfterMs: this.config.cleanAfterMs, cleanAfterBytes: this.config.cleanAfterBytes };
  }
  /** Per 4 KiB unit: the id of the last acknowledged write to it (0: never written). */
  private readonly ackedId: Uint32Array;
  /** Per write id: its units, to tell a real id from garbage. */
  private readonly units = new Map<number, { first: number; count: number }>();
  private nextId = 1;
  private outstanding = 0;
  private waiters: Array<() => void> = [];
  private failure: OracleFailure | undefined;
  private failed!: (error: OracleFailure) => void;
  private readonly failedPromise: Promise<never>;

  constructor(readonly seed: number, configure?: (c: PairSimConfig) => PairSimConfig, private readonly traceLine?: (line: string) => void) {
    const root = new Prng(seed);
    const chosen = choosePairConfig(root.fork());
    this.config = configure ? configure(chosen) : chosen;
    this.workload = root.fork();
    this.faults = root.fork();
    this.links = new SimLinks(this.scheduler, root.fork());
    const onError = (): void => undefined; // background errors are expected under faults; the oracle judges
    const fanOut = this.config.fanOut ?? null;
    this.east = new SimArray('east', fanOut ? ['west', 'north'] : ['west'], 'db', this.config.sizeBytes, this.scheduler, this.links, root.fork(), onError);
    this.west = new SimArray('west', ['east'], 'db-r', this.config.sizeBytes, this.scheduler, this.links, root.fork(), onError);
    this.ackedId = new Uint32Array(this.config.sizeBytes / UNIT);
    this.failedPromise = new Promise<never>((_, reject) => { this.failed = reject; });
    this.failedPromise.catch(() => undefined);
    // Forked last, and only when used: seeds without fan-out draw what they drew before.
    if (fanOut) this.north = new SimArray('north', ['east'], 'db-n', this.config.sizeBytes, this.scheduler, this.links, root.fork(), onError);
  }

  /** For checks in callbacks: the failure is recorded and ends the run; nothing is thrown here. */
  private check(body: () => void): void {
    try {
      body();
    } catch (error) {
      if (!(error instanceof OracleFailure)) this.fail(String((error as Error)?.stack ?? error));
    }
  }

  private trace(line: string): void {
    this.traceLine?.(`${this.scheduler.nowMs.toFixed(3).padStart(9)} ${line}`);
  }

  /** Traces what lands on R2 (for reproducing one seed). */
  private watchR2(): void {
    if (!this.traceLine) return;
    this.west.volume?.observers.push({
      applied: (w) => {
        this.trace(`R2 ${w.source} ${w.kind} units ${w.offset / UNIT}+${w.length / UNIT}${w.data ? ` ids ${[...new Set(Array.from({ length: w.length / UNIT }, (_, i) => new DataView(w.data!.buffer, w.data!.byteOffset + i * UNIT).getUint32(0)))].join(',')}` : ''}`);
      },
    });
  }

  private fail(message: string): never {
    const error = new OracleFailure(message);
    if (!this.failure) {
      this.failure = error;
      this.failed(error);
    }
    throw error;
  }

  async run(): Promise<void> {
    const body = (async () => {
      await this.east.start(this.seed, this.cleanConfig);
      await this.west.start(this.seed, this.cleanConfig);
      await this.north?.start(this.seed, this.cleanConfig);
      this.watchR2();
      this.watchR1Cycles();
      await this.waitFor('link up', () => this.east.linkEndpoint!.isUp('west'), 1000);
      await this.east.pairs!.create({
        volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: this.config.mode, onLinkFailure: this.config.onLinkFailure,
        ...(this.config.extents ? { extents: this.config.extents } : {}),
        ...(this.config.cycleMemoryBytes !== undefined ? { cycleMemoryBytes: this.config.cycleMemoryBytes } : {}),
        ...(this.config.spillLimitBytes !== undefined ? { spillLimitBytes: this.config.spillLimitBytes } : {}),
      });
      if (this.north && this.config.fanOut) {
        await this.waitFor('link to north up', () => this.east.linkEndpoint!.isUp('north'), 1000);
        await this.east.pairs!.create({
          volume: 'db', name: 'db-n', peer: 'north', remoteVolume: 'db-n', mode: this.config.fanOut, onLinkFailure: 'continue', cycleMs: 100,
        });
      }
      this.phase = 'safety';
      await this.safety();
      this.phase = 'liveness';
      await this.liveness();
    })();
    try {
      await this.scheduler.until(Promise.race([body, this.failedPromise]), () => `the ${this.phase} phase`, 2_000_000);
    } catch (error) {
      if (error instanceof SimStuckError) throw new OracleFailure(`${error.message}; ${this.outstanding} writes outstanding`);
      throw error;
    }
  }

  private async waitFor(what: string, done: () => boolean, timeoutMs: number, detail?: () => string): Promise<void> {
    const deadline = this.scheduler.nowMs + timeoutMs;
    while (!done()) {
      if (this.scheduler.nowMs > deadline) this.fail(`${what} did not happen within ${timeoutMs} virtual ms${detail ? ` (${detail()})` : ''}`);
      await this.scheduler.sleep(5);
    }
  }

  private get strict(): boolean {
    return this.config.mode === 'sync' && this.config.onLinkFailure === 'fail-writes' && !this.config.powerLoss;
  }

  /** Async: which capture cycle each write began in, per run of the cycles (an epoch). */
  private readonly cycleOf = new Map<number, { epoch: number; cycle: number }>();
  private epoch = 0;
  private epochCycles: object | undefined;
  /** R1's image (a write id per unit) when the current epoch's cycles started. */
  private epochBaseline: number[] = [];
  private r1PowerLost = false;

  /** Watches east's writes begin, to know the cycle of each (the async boundary oracle). */
  private watchR1Cycles(): void {
    if (this.config.mode !== 'async') return;
    this.east.volume?.observers.push({
      begin: (w) => {
        const runtime = this.east.pairs?.isPaired('db') ? this.east.pairs.runtime('db') : undefined;
        if (!runtime?.capturing || !w.data || w.source !== 'host') return;
        const id = new DataView(w.data.buffer, w.data.byteOffset).getUint32(0);
        if (runtime.asyncR1 !== this.epochCycles) {
          // The cycles started from a quiet pair: R1's image now is R2's at the epoch's start.
          this.epochCycles = runtime.asyncR1;
          this.epoch++;
          const image = this.east.disk.visibleBytes(0, this.config.sizeBytes);
          this.epochBaseline = Array.from({ length: this.ackedId.length }, (_, u) => this.idAt(image, u, 'R1'));
        }
        this.cycleOf.set(id, { epoch: this.epoch, cycle: runtime.asyncR1!.cycles.captureCycle });
      },
    });
  }

  /**
   * Async: while R2 is between applies, each unit holds the last write to it among those begun
   * before this epoch's cycles started and those of cycles R2 applied — R1's image at a boundary.
   */
  private checkAtCycleBoundary(): void {
    if (this.config.mode !== 'async' || this.r1PowerLost) return;
    const r1 = this.east.pairs?.isPaired('db') ? this.east.pairs.runtime('db') : undefined;
    const r2 = this.west.pairs?.isPaired('db-r') ? this.west.pairs.runtime('db-r').asyncR2 : undefined;
    if (!r1?.capturing || r1.asyncR1 !== this.epochCycles || !r2 || r2.stopped || r2.applying) return;
    const applied = r2.appliedCycle;
    const image = this.west.disk.visibleBytes(0, this.config.sizeBytes);
    for (let u = 0; u < this.ackedId.length; u++) {
      if (!this.replicated(u)) continue;
      let expected = this.epochBaseline[u] ?? 0;
      let latest = 0;
      for (const [id, w] of this.units) {
        if (u < w.first || u >= w.first + w.count || id <= latest) continue;
        const c = this.cycleOf.get(id);
        if (c !== undefined && c.epoch === this.epoch && c.cycle <= applied) latest = id;
      }
      if (latest !== 0) expected = latest;
      const held = this.idAt(image, u, 'R2');
      if (held !== expected) {
        this.fail(`async R2 unit ${u} holds write ${held}, but R1's image after cycle ${applied} has write ${expected} there`);
      }
    }
  }

  private async safety(): Promise<void> {
    for (let i = 0; i < this.config.writes; i++) {
      await this.maybeFault();
      while (this.outstanding >= this.config.maxConcurrent) await new Promise<void>((r) => this.waiters.push(r));
      if (this.east.volume) this.issueWrite(this.east.volume);
      await this.scheduler.sleep(this.workload.next() * 3);
      if (this.strict) this.checkNoAckedWriteMissing();
      this.checkAtCycleBoundary();
    }
    while (this.outstanding > 0) await new Promise<void>((r) => this.waiters.push(r));
    if (this.strict) this.checkNoAckedWriteMissing();
  }

  private async maybeFault(): Promise<void> {
    const f = this.faults;
    if (f.chance(this.config.partitionChance)) {
      if (this.links.isPartitioned('east', 'west')) {
        this.trace('heal');
        this.links.heal('east', 'west');
        if (this.north) this.links.heal('east', 'north');
      } else {
        this.trace('partition');
        this.links.partition('east', 'west');
        // The fan-out link fails with it (no draw of its own: the seed's faults stay as they were).
        if (this.north) this.links.partition('east', 'north');
        this.partitions++;
      }
    }
    if (f.chance(this.config.crashChance)) {
      const victim = f.chance(0.5) ? this.east : this.west;
      this.crashes++;
      // Writes in flight on a crashed R1 never complete; the oracle forgets them (they were not acknowledged).
      if (victim === this.east) this.abandonOutstanding();
      this.trace(`crash ${victim.name}`);
      if (victim === this.east && this.config.powerLoss) this.r1PowerLost = true;
      victim.crash(this.config.powerLoss);
      await this.scheduler.sleep(f.next() * 50);
      await victim.start(this.seed, this.cleanConfig);
      if (victim === this.west) this.watchR2();
      else this.watchR1Cycles();
    }
  }

  private abandonOutstanding(): void {
    this.outstanding = 0;
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w();
  }

  private issueWrite(volume: Volume): void {
    const totalUnits = this.config.sizeBytes / UNIT;
    const count = this.workload.int(1, Math.min(this.config.maxUnitsPerWrite, totalUnits));
    const first = this.workload.int(0, totalUnits - count);
    const id = this.nextId++;
    this.units.set(id, { first, count });
    const data = new Uint8Array(count * UNIT);
    const view = new DataView(data.buffer);
    for (let u = 0; u < count; u++) {
      view.setUint32(u * UNIT, id);
      view.setUint32(u * UNIT + 4, first + u);
      data.fill(id & 0xff, u * UNIT + 8, (u + 1) * UNIT);
    }
    const generation = this.east.generation;
    this.outstanding++;
    this.trace(`issue write ${id} units ${first}+${count}`);
    volume.write(first * UNIT, data).then(() => this.check(() => {
      if (generation !== this.east.generation) return;
      this.acked++;
      this.trace(`acked write ${id}`);
      for (let u = first; u < first + count; u++) if (this.ackedId[u]! < id) this.ackedId[u] = id;
      if (this.strict) this.checkNoAckedWriteMissing();
    }), (error: unknown) => this.check(() => {
      if (generation !== this.east.generation) return;
      this.trace(`write ${id} failed: ${String(error)}`);
      // Refused writes are expected only when the pair cannot replicate and is set to fail them.
      if (!(isTidemarkError(error) && this.config.onLinkFailure === 'fail-writes')) {
        this.fail(`write ${id} failed unexpectedly: ${String(error)}`);
      }
    })).finally(() => {
      if (generation !== this.east.generation) return;
      this.outstanding--;
      const waiting = this.waiters;
      this.waiters = [];
      for (const w of waiting) w();
    });
  }

  /** The id a unit of a volume image holds (0: never written), checked to be a real write to it. */
  private idAt(image: Uint8Array, unit: number, where: string): number {
    const view = new DataView(image.buffer, image.byteOffset + unit * UNIT, UNIT);
    const id = view.getUint32(0);
    if (id === 0) return 0;
    const w = this.units.get(id);
    if (!w || view.getUint32(4) !== unit || unit < w.first || unit >= w.first + w.count) {
      this.fail(`${where} unit ${unit} holds bytes of no write to it (id ${id})`);
    }
    return id;
  }

  /** Whether a unit replicates (inside the pair's extents, or there are none). */
  private replicated(unit: number): boolean {
    const at = unit * UNIT;
    return this.config.extents === null || this.config.extents.some((e) => at >= e.offset && at < e.offset + e.length);
  }

  private checkNoAckedWriteMissing(): void {
    const image = this.west.disk.visibleBytes(0, this.config.sizeBytes);
    for (let u = 0; u < this.ackedId.length; u++) {
      const held = this.idAt(image, u, 'R2');
      if (!this.replicated(u)) {
        if (held !== 0) this.fail(`R2 unit ${u} is outside the extents but holds write ${held}`);
        continue;
      }
      if (held < this.ackedId[u]!) {
        this.fail(`R2 unit ${u} holds write ${held}, older than acknowledged write ${this.ackedId[u]} (time ${this.scheduler.nowMs.toFixed(3)})`);
      }
    }
  }

  /** Async pairs: the cycles must start, carry more writes, and R2 must apply them all. */
  private async asyncLiveness(): Promise<void> {
    const pairs = (): PairManager => this.east.pairs!;
    await this.waitFor('async cycles started', () => pairs().status('db').cycles !== null, 120_000);
    for (let i = 0; i < 10; i++) {
      this.issueWrite(this.east.volume!);
      while (this.outstanding > 0) await new Promise<void>((r) => this.waiters.push(r));
      await this.scheduler.sleep(this.workload.next() * 60);
      this.checkAtCycleBoundary();
    }
    // A small spill limit may have made the cycles fall back to bitmaps: they start again once synchronized.
    await this.waitFor('async cycles running', () => pairs().status('db').cycles !== null, 120_000);
    const last = pairs().status('db').cycles!.captureCycle!;
    await this.waitFor(`R2 applied cycle ${last}`, () => (this.west.pairs!.status('db-r').cycles?.appliedCycle ?? 0) >= last, 120_000);
  }

  private async liveness(): Promise<void> {
    this.links.heal('east', 'west');
    if (this.north) this.links.heal('east', 'north');
    await this.waitFor('pair synchronized after healing', () => {
      const pairs = this.east.pairs;
      return pairs !== undefined && pairs.isPaired('db') && pairs.status('db').state === 'synchronized';
    }, 120_000);
    await this.scheduler.sleep(50);
    if (this.east.pairs!.status('db').state !== 'synchronized') this.fail('the pair left synchronized with no writes');
    if (this.config.mode === 'async') await this.asyncLiveness();
    const r1 = this.east.disk.visibleBytes(0, this.config.sizeBytes);
    const r2 = this.west.disk.visibleBytes(0, this.config.sizeBytes);
    for (let u = 0; u < this.ackedId.length; u++) {
      const a = this.idAt(r1, u, 'R1');
      const b = this.idAt(r2, u, 'R2');
      if (!this.replicated(u)) {
        if (b !== 0) this.fail(`R2 unit ${u} is outside the extents but holds write ${b}`);
        continue;
      }
      if (Buffer.compare(r1.subarray(u * UNIT, (u + 1) * UNIT), r2.subarray(u * UNIT, (u + 1) * UNIT)) !== 0) {
        this.fail(`after convergence unit ${u} differs: R1 holds write ${a}, R2 holds write ${b}`);
      }
      if (!this.config.powerLoss && a < this.ackedId[u]!) this.fail(`R1 unit ${u} lost acknowledged write ${this.ackedId[u]}`);
    }
    // Idle now (no host ever flushed): R1's flush rounds must leave its bitmap clean on disk.
    const pairDetail = (name: string) => (): string => {
      const st = this.east.pairs!.status(name);
      return `${name}: ${st.state}, invalid tracks ${JSON.stringify(st.invalidTracks)}, owed ${st.tracksOwed}, flush rounds ${st.counters.flushRounds}`;
    };
    await this.waitFor('R1 clean on disk once idle', () => {
      const shown = this.east.pairs!.status('db').invalidTracks;
      return shown.local === 0 && shown.persisted === 0;
    }, this.config.cleanAfterMs + 5000, pairDetail('db'));
    if (this.north) await this.fanOutLiveness();
  }

  /** The fan-out pair converges too: north equals R1 byte for byte (the whole volume replicates to it), and its bits end clean on disk. */
  private async fanOutLiveness(): Promise<void> {
    const north = this.north!;
    const same = (): boolean => {
      if (this.east.pairs?.status('db-n').state !== 'synchronized') return false;
      return Buffer.compare(this.east.disk.visibleBytes(0, this.config.sizeBytes), north.disk.visibleBytes(0, this.config.sizeBytes)) === 0;
    };
    await this.waitFor('the fan-out pair converged', same, 120_000);
    const r1 = this.east.disk.visibleBytes(0, this.config.sizeBytes);
    for (let u = 0; u < this.ackedId.length; u++) this.idAt(r1, u, 'R1');
    await this.waitFor('the fan-out pair clean on disk once idle', () => {
      const shown = this.east.pairs!.status('db-n').invalidTracks;
      return shown.local === 0 && shown.persisted === 0;
    }, this.config.cleanAfterMs + 5000);
  }
}
