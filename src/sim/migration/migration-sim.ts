// One seeded run of online migration or online import (SPEC §8) with the product's ArrayService,
// MigrationManager / ImportManager and their core machines on simulated disks, metadata and a flaky
// NBD source: a safety phase with host writes and reads, migration commands (cutover, detach,
// reattach), source outages and power losses, then a liveness phase that must converge and finish.
// Oracle (outside the system): every read returns the host's latest acknowledged data (writes are
// FUA, so acknowledged means durable); after a reattach's replay the old storage equals the model;
// after finish the volume equals the model (and, importing with write-back, so does the source).
import { ErrorCode, isTidemarkError } from '../../core/errors.js';
import { Prng } from '../../core/lib/prng.js';
import { ArrayService } from '../../app/array-service.js';
import type { Timers } from '../../ports/timers.js';
import { Scheduler, SimStuckError } from '../scheduler.js';
import { FlakySourceServer, SimArrayDevices } from './sim-array-devices.js';

const UNIT = 512;
const KiB = 1024;
const VOL = 'vol';
const TARGET = 'new';
const IMPORTED = 'imp';
const SOURCE_URL = 'nbd://source.sim/export';
/** Virtual time the liveness phase may take to converge. */
const CONVERGE_MS = 600_000;

export interface MigrationSimConfig {
  readonly scenario: 'migration' | 'import';
  readonly sizeBytes: number;
  readonly trackBytes: number;
  readonly manualCutover: boolean;
  readonly writeBack: boolean;
  readonly maxBytesPerSecond: number | null;
  readonly safetyOps: number;
  readonly crashBeforeOp: readonly number[];
  readonly dropChance: number;
  readonly maxUnits: number;
}

export function chooseMigrationConfig(prng: Prng): MigrationSimConfig {
  const trackBytes = prng.pick([4096, 16384, 65536]);
  const safetyOps = prng.int(60, 160);
  const crashes = prng.int(0, 3);
  const crashBeforeOp = Array.from({ length: crashes }, () => prng.int(1, safetyOps - 1)).sort((a, b) => a - b);
  return {
    scenario: prng.chance(0.5) ? 'migration' : 'import',
    sizeBytes: prng.int(4, 24) * 64 * KiB,
    trackBytes, manualCutover: prng.chance(0.5), writeBack: prng.chance(0.5),
    maxBytesPerSecond: prng.chance(0.3) ? prng.int(1, 8) * 1024 * KiB : null,
    safetyOps, crashBeforeOp, dropChance: prng.pick([0, 0.01, 0.05]), maxUnits: prng.pick([1, 8, 64, 256]),
  };
}

export const describeMigrationConfig = (c: MigrationSimConfig): string =>
  `${c.scenario}, ${c.sizeBytes / KiB} KiB in ${c.trackBytes / KiB} KiB tracks, ` +
  (c.scenario === 'migration' ? `${c.manualCutover ? 'manual' : 'automatic'} cutover` : `${c.writeBack ? 'write-back' : 'no write-back'}, drop ${c.dropChance}`) +
  `, ${c.safetyOps} ops, crashes before ${c.crashBeforeOp.join(',') || '-'}`;

export interface MigrationSeedResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly failure?: string;
  readonly config: MigrationSimConfig;
  readonly hostOps: number;
  readonly crashes: number;
  readonly commands: number;
  readonly failedIo: number;
  readonly virtualMs: number;
}

class OracleFailure extends Error {}

export async function runMigrationSeed(seed: number, trace?: (line: string) => void): Promise<MigrationSeedResult> {
  const sim = new MigrationSim(seed, trace);
  let failure: string | undefined;
  try {
    await sim.run();
  } catch (error) {
    failure = `${sim.phase}: ${error instanceof OracleFailure ? error.message : String((error as Error)?.stack ?? error)}`;
  }
  sim.stop();
  return {
    seed, ok: failure === undefined, ...(failure === undefined ? {} : { failure }), config: sim.config,
    hostOps: sim.hostOps, crashes: sim.crashes, commands: sim.commands, failedIo: sim.failedIo, virtualMs: sim.scheduler.nowMs,
  };
}

class MigrationSim {
  readonly scheduler = new Scheduler();
  readonly config: MigrationSimConfig;
  phase = 'setup';
  hostOps = 0;
  crashes = 0;
  commands = 0;
  failedIo = 0;
  private readonly prng: Prng;
  private readonly devices: SimArrayDevices;
  private readonly source: FlakySourceServer;
  /** What the host last wrote (and had acknowledged) per byte. */
  private readonly model: Uint8Array;
  /** Per 512-byte unit: a write failed there, so its content is either (skipped until rewritten). */
  private readonly unknown: Uint8Array;
  private service: ArrayService | undefined;
  private generation = 0;
  private writeBackFailed = false;
  private stopped = false;

  constructor(readonly seed: number, private readonly traceLine?: (line: string) => void) {
    const root = new Prng(seed);
    this.config = chooseMigrationConfig(root.fork());
    this.prng = root.fork();
    this.devices = new SimArrayDevices(this.scheduler, root.fork());
    const image = new Uint8Array(this.config.sizeBytes);
    fillPattern(image, 0, image.length, root.fork());
    this.source = new FlakySourceServer(image, this.scheduler, root.fork());
    this.model = new Uint8Array(this.config.sizeBytes);
    this.unknown = new Uint8Array(this.config.sizeBytes / UNIT);
  }

  private get name(): string {
    return this.config.scenario === 'migration' ? VOL : IMPORTED;
  }

  private trace(line: string): void {
    this.traceLine?.(`${this.scheduler.nowMs.toFixed(3).padStart(10)} ${line}`);
  }

  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<void> {
    const body = (async () => {
      await this.open();
      await this.setup();
      this.phase = 'safety';
      const crashes = [...this.config.crashBeforeOp];
      for (let i = 0; i < this.config.safetyOps; i++) {
        while (crashes[0] === i) {
          crashes.shift();
          await this.crashAndRecover();
        }
        await this.step();
      }
      this.phase = 'liveness';
      await this.liveness();
    })();
    try {
      await this.scheduler.until(body, () => `the ${this.phase} phase`, 3_000_000);
    } catch (error) {
      if (error instanceof SimStuckError) throw new OracleFailure(error.message);
      throw error;
    }
  }

  private fail(message: string): never {
    throw new OracleFailure(message);
  }

  private timers(alive: () => boolean): Timers {
    const s = this.scheduler;
    return {
      after(ms, fire) {
        let cancelled = false;
        s.at(ms, () => { if (!cancelled && alive()) fire(); });
        return () => { cancelled = true; };
      },
      every: (ms, fire) => {
        let cancelled = false;
        const tick = (): void => {
          if (cancelled || !alive() || this.stopped) return;
          fire();
          s.at(ms, tick);
        };
        s.at(ms, tick);
        return () => { cancelled = true; };
      },
    };
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    const alive = (): boolean => this.generation === generation && !this.stopped;
    const { stores, journals, meta } = this.devices.incarnation(alive);
    this.service = await ArrayService.open({
      name: 'sim', meta, stores, journals, nowMs: () => this.scheduler.nowMs,
      importSources: (url) => (alive() ? this.source.connect(url) : new Promise(() => undefined)),
      copyTimers: this.timers(alive),
      copyPause: (ms) => new Promise((resolve) => this.scheduler.at(ms > 0 ? ms : 0.01, () => { if (alive()) resolve(); })),
      onBackgroundError: (error) => this.trace(`background error: ${(error as Error).message}`),
    });
  }

  private get array(): ArrayService {
    return this.service!;
  }

  private async setup(): Promise<void> {
    const c = this.config;
    if (c.scenario === 'migration') {
      await this.array.createVolume(VOL, c.sizeBytes, c.trackBytes);
      await this.array.createVolume(TARGET, c.sizeBytes, c.trackBytes);
      for (let i = 0; i < 8; i++) await this.hostWrite();
      await this.array.migrations.start(VOL, TARGET, c.manualCutover);
    } else {
      this.model.set(this.source.image);
      this.source.dropChance = c.dropChance;
      await this.retrySource(() => this.array.imports.start(IMPORTED, SOURCE_URL, c.writeBack, c.maxBytesPerSecond));
    }
    this.trace(`started ${describeMigrationConfig(c)}`);
  }

  /** Starting an import needs the source: a dropped connection is tried again. */
  private async retrySource<T>(call: () => Promise<T>): Promise<T> {
    for (let i = 0; ; i++) {
      try {
        return await call();
      } catch (error) {
        if (!isTidemarkError(error, ErrorCode.Unavailable) || i > 50) throw error;
        await this.scheduler.sleep(5);
      }
    }
  }

  private randomRange(): { offset: number; length: number } {
    const units = this.config.sizeBytes / UNIT;
    const n = this.prng.int(1, Math.min(units, this.config.maxUnits));
    const first = this.prng.int(0, units - n);
    return { offset: first * UNIT, length: n * UNIT };
  }

  private async hostWrite(): Promise<void> {
    const { offset, length } = this.randomRange();
    const data = new Uint8Array(length);
    fillPattern(data, 0, length, this.prng.fork());
    this.hostOps++;
    try {
      await this.array.volume(this.name).write(offset, data, true);
      this.model.set(data, offset);
      this.unknown.fill(0, offset / UNIT, (offset + length) / UNIT);
      this.trace(`write ${offset}+${length} ok`);
    } catch (error) {
      // An import whose source is down fails writes to unfetched tracks (before anything lands) and,
      // with write-back, writes the source did not take (after the local write may have landed).
      if (this.config.scenario !== 'import') this.fail(`a write ${offset}+${length} failed: ${(error as Error).message}`);
      this.failedIo++;
      if (this.config.writeBack) {
        this.writeBackFailed = true;
        this.unknown.fill(1, offset / UNIT, (offset + length) / UNIT);
      }
      this.trace(`write ${offset}+${length} failed: ${(error as Error).message}`);
    }
  }

  private async hostRead(offset: number, length: number, what: string): Promise<void> {
    this.hostOps++;
    let got: Uint8Array;
    try {
      got = await this.array.volume(this.name).read(offset, length);
    } catch (error) {
      if (this.config.scenario !== 'import' || !isTidemarkError(error, ErrorCode.Unavailable)) {
        this.fail(`${what}: read ${offset}+${length} failed: ${(error as Error).message}`);
      }
      this.failedIo++;
      return;
    }
    this.compare(got, offset, `${what}: read ${offset}+${length}`);
  }

  private compare(got: Uint8Array, offset: number, what: string): void {
    for (let at = 0; at < got.length; at += UNIT) {
      if (this.unknown[(offset + at) / UNIT]) continue;
      for (let i = at; i < at + UNIT; i++) {
        if (got[i] !== this.model[offset + i]) {
          this.fail(`${what}: byte ${offset + i} is ${got[i]}, the host last wrote ${this.model[offset + i]}`);
        }
      }
    }
  }

  private async step(): Promise<void> {
    const roll = this.prng.next();
    if (roll < 0.45) await this.hostWrite();
    else if (roll < 0.8) {
      const { offset, length } = this.randomRange();
      await this.hostRead(offset, length, 'host read');
    } else if (roll < 0.85) await this.array.volume(this.name).flush().catch((e: unknown) => {
      if (!(this.config.scenario === 'import' && this.config.writeBack)) this.fail(`flush failed: ${(e as Error).message}`);
      this.failedIo++;
    });
    else if (roll < 0.95) await this.command();
    await this.scheduler.sleep(this.prng.next() * 3);
  }

  /** A command an operator might give now; refusals for the state are fine, anything else is not. */
  private async command(): Promise<void> {
    this.commands++;
    const c = this.config;
    // Sometimes the power goes while the command runs (mid-cutover, mid-finish, ...).
    const crashAfterMs = this.prng.chance(0.25) ? this.prng.next() * 4 : undefined;
    const attempt = async (label: string, call: () => Promise<unknown>): Promise<void> => {
      const work = call().then(() => undefined, (error: unknown) => error);
      const crash = crashAfterMs === undefined ? undefined
        : new Promise<'crash'>((resolve) => this.scheduler.at(crashAfterMs, () => resolve('crash')));
      const outcome = await (crash ? Promise.race([work, crash]) : work);
      if (outcome === 'crash') {
        this.trace(`${label} interrupted`);
        await this.crashAndRecover();
        return;
      }
      if (outcome === undefined) {
        this.trace(`${label} ok`);
        return;
      }
      if (!isTidemarkError(outcome, ErrorCode.InvalidState)) this.fail(`${label} failed: ${(outcome as Error).message}`);
      this.trace(`${label} refused: ${(outcome as Error).message}`);
    };
    if (c.scenario === 'import') {
      this.source.up = !this.source.up || !this.prng.chance(0.5);
      this.trace(`source ${this.source.up ? 'up' : 'down'}`);
      return;
    }
    const m = this.array.migrations.show(VOL);
    const finishNow = this.prng.chance(0.15);
    if (m.state === 'copying') await attempt('cutover', () => this.array.migrations.cutover(VOL));
    else if (finishNow && m.state !== 'finished') await attempt('finish', () => this.array.migrations.finish(VOL));
    else if (m.state === 'cut-over') await attempt('detach', () => this.array.migrations.detach(VOL));
    else if (m.state === 'detached') await attempt('reattach', () => this.array.migrations.reattach(VOL));
  }

  private async crashAndRecover(): Promise<void> {
    this.crashes++;
    this.phase = `crash ${this.crashes}`;
    this.trace('CRASH');
    const dead = this.service;
    this.generation++;
    this.devices.crash();
    void dead?.abandon().catch(() => undefined);
    await this.open();
    await this.fullCheck('after recovery');
    this.phase = 'safety';
  }

  private async fullCheck(what: string): Promise<void> {
    await this.hostRead(0, this.config.sizeBytes, what);
  }

  private async converge(what: string, done: () => boolean): Promise<void> {
    const deadline = this.scheduler.nowMs + CONVERGE_MS;
    while (!done()) {
      if (this.scheduler.nowMs > deadline) this.fail(`${what} did not happen within ${CONVERGE_MS} virtual ms`);
      await this.scheduler.sleep(20);
    }
  }

  private async liveness(): Promise<void> {
    this.source.up = true;
    this.source.dropChance = 0;
    if (this.config.scenario === 'migration') await this.finishMigration();
    else await this.finishImport();
    // A clean restart changes nothing.
    await this.service!.close();
    await this.open();
    await this.fullCheck('after a clean restart');
    await this.service!.close();
  }

  private async finishMigration(): Promise<void> {
    const migrations = this.array.migrations;
    if (migrations.show(VOL).state === 'finished') return this.checkFinished();
    if (migrations.show(VOL).state === 'detached') await migrations.reattach(VOL);
    await this.converge('the copy', () => migrations.show(VOL).tracksLeft === 0);
    if (migrations.show(VOL).state === 'copying') {
      if (this.config.manualCutover) await migrations.cutover(VOL);
      await this.converge('the cutover', () => migrations.show(VOL).state === 'cut-over');
    }
    await this.converge('the replay', () => migrations.show(VOL).tracksLeft === 0);
    await this.fullCheck('cut over');
    // The old storage (the target volume holds it since the cutover) equals VOL after the copy.
    const old = await this.array.volume(TARGET).internalRead(0, this.config.sizeBytes);
    this.compare(old, 0, 'the old storage after the replay');
    await migrations.finish(VOL);
    await this.checkFinished();
  }

  private async checkFinished(): Promise<void> {
    if (this.array.migrations.show(VOL).state !== 'finished') this.fail('finish did not finish');
    if (this.array.findVolume(TARGET)) this.fail('the target volume outlived the finish');
    if ([...this.devices.disks.keys()].join() !== VOL) this.fail(`storage left after finish: ${[...this.devices.disks.keys()].join(', ')}`);
    await this.fullCheck('finished');
  }

  private async finishImport(): Promise<void> {
    const imports = this.array.imports;
    await this.converge('the import copy', () => imports.show(IMPORTED).state === 'copied');
    await this.fullCheck('copied');
    await imports.finish(IMPORTED);
    await this.fullCheck('finished');
    if (this.config.writeBack && !this.writeBackFailed) this.compare(this.source.image, 0, 'the source after a write-back import');
  }
}

/** Seeded bytes (a cheap generator: the oracle compares them, nothing else reads them). */
function fillPattern(target: Uint8Array, offset: number, length: number, prng: Prng): void {
  let x = prng.int(1, 0x7fffffff);
  for (let i = offset; i < offset + length; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    target[i] = x >>> 16;
  }
}
