// Seeded simulation of journal replication (SPEC §6) over the product's core machines — the
// sequencer, each primary array's journal position, each secondary array's pending-write queue and
// the recovery report — on several primary and secondary arrays joined by a lossy, delaying,
// duplicating, reordering and partitioning network, with secondary crashes (restart from what was
// persisted, also mid-apply), primary crashes (kill -9: the primary restarts from its log and
// resends what its secondaries may lack) and, in some seeds, a disaster: every primary array dies, at staggered
// moments, and the secondaries run recovery.
//
// The workload is dependent writes: a few hosts, each issuing its next write (to any journaled
// volume on any live primary array) only after its previous one was acknowledged.
//
// Oracles (outside the machines):
// - order: a write issued after another was acknowledged has a higher sequence number;
// - prefix: whenever a secondary has applied up to A, its volumes hold exactly the pieces numbered
//   up to A that are its own (and nothing numbered after A);
// - recovery: every secondary is brought to the reported point S, none had applied beyond it, the
//   images together are the first S pieces; every reported entry is a piece numbered after S with
//   the right volume, offset and length; with `tokens sync` every acknowledged write beyond S is in
//   `lost` or `stranded`, and `unacknowledged` holds no acknowledged write;
// - liveness: without a disaster, once the network heals every secondary applies everything issued.
//
// The loop is synchronous (the machines are pure): events in a heap by (time, insertion order).
import { Prng } from '../../core/lib/prng.js';
import { Sequencer, type SequencerAction } from '../../core/journal/sequencer.js';
import { JournalPrimary, type PrimaryAction, type PrimaryBugs, type TokenMode } from '../../core/journal/journal-primary.js';
import { JournalSecondary, emptyDurable, type SecondaryAction, type SecondaryBugs, type SecondaryDurable } from '../../core/journal/journal-secondary.js';
import { computeRecovery, type RecoveryReport } from '../../core/journal/journal-recovery.js';
import { splitWrite, type JournalMessage, type Token } from '../../core/journal/journal-types.js';
import { replayPrimaryLog, type IssuedRecord, type PrimaryLogRecord } from '../../core/journal/primary-log.js';
import { EventLoop } from './event-loop.js';

const JOURNAL = 'j';
const UNIT = 512;

export interface JournalSimConfig {
  readonly primaries: number;
  readonly secondaries: number;
  readonly volumesPerPrimary: number;
  /** Chance a volume's two halves go to different secondaries. */
  readonly splitRate: number;
  readonly volumeUnits: number;
  readonly tokens: TokenMode;
  readonly intervalMs: number;
  readonly batchBytes: number;
  readonly hosts: number;
  readonly writes: number;
  readonly lossRate: number;
  readonly dupRate: number;
  readonly maxDelayMs: number;
  readonly partitions: boolean;
  readonly secondaryCrashes: boolean;
  readonly disaster: boolean;
  // ---- drawn after everything above ----
  /** The primaries' bound on captured bytes not yet acknowledged (writes wait beyond it). */
  readonly maxPendingBytes: number;
  /** Primary arrays other than the sequencer's are killed (-9) and restarted now and then. */
  readonly primaryCrashes: boolean;
  /** The sequencer's array (p0, a primary too) is killed (-9) and restarted now and then. */
  readonly sequencerCrashes: boolean;
}

export function drawJournalConfig(prng: Prng): JournalSimConfig {
  return {
    primaries: prng.pick([1, 2, 2, 3]),
    secondaries: prng.pick([1, 2, 2, 3]),
    volumesPerPrimary: prng.pick([1, 2]),
    splitRate: prng.pick([0, 0.5]),
    volumeUnits: prng.pick([4, 8, 16]),
    tokens: prng.pick(['ahead', 'sync'] as const),
    intervalMs: prng.pick([1, 5, 20]),
    batchBytes: prng.pick([UNIT, 4 * UNIT, 64 * UNIT]),
    hosts: prng.pick([1, 2, 4]),
    writes: prng.int(30, 120),
    lossRate: prng.pick([0, 0.02, 0.1, 0.25]),
    dupRate: prng.pick([0, 0.05, 0.2]),
    maxDelayMs: prng.pick([1, 3, 10]),
    partitions: prng.chance(0.3),
    secondaryCrashes: prng.chance(0.5),
    disaster: prng.chance(0.6),
    maxPendingBytes: prng.pick([1e12, 1e12, 4 * UNIT, 32 * UNIT]),
    primaryCrashes: prng.chance(0.5),
    sequencerCrashes: prng.chance(0.4),
  };
}

export function describeJournalConfig(c: JournalSimConfig): string {
  return `${c.primaries} primary / ${c.secondaries} secondary arrays, ${c.volumesPerPrimary} volume(s) each, split ${c.splitRate}, ` +
    `tokens ${c.tokens}, interval ${c.intervalMs} ms, batch ${c.batchBytes} B, ${c.hosts} host(s), ${c.writes} writes, ` +
    `loss ${c.lossRate}, dup ${c.dupRate}, delay ≤${c.maxDelayMs} ms${c.partitions ? ', partitions' : ''}` +
    `${c.secondaryCrashes ? ', secondary crashes' : ''}${c.disaster ? ', disaster' : ''}` +
    `${c.maxPendingBytes < 1e12 ? `, pending ≤ ${c.maxPendingBytes} B` : ''}${c.primaryCrashes && c.primaries > 1 ? ', primary crashes' : ''}${c.sequencerCrashes ? ', sequencer crashes' : ''}`;
}

export interface JournalSeedResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly failure?: string;
  readonly config: JournalSimConfig;
  readonly acked: number;
  readonly issued: number;
  readonly secondaryCrashes: number;
  readonly primaryCrashes: number;
  readonly messages: number;
  readonly report: RecoveryReport | null;
  /** After a disaster: pieces of acknowledged writes beyond the recovered point (each one reported). */
  readonly ackedBeyond: number;
  readonly virtualMs: number;
}

export interface JournalSeedOptions {
  /** sequencerForgetsLog: a restarted sequencer starts without its log (from 1, nothing remembered). */
  readonly bugs?: SecondaryBugs & PrimaryBugs & { readonly sequencerForgetsLog?: boolean };
  readonly trace?: (line: string) => void;
  readonly override?: Partial<JournalSimConfig>;
}

class SimFailure extends Error {
  readonly fromOracle = true;
}

interface Pair { readonly id: string; readonly volume: string; readonly secondary: string; readonly extents: { offset: number; length: number }[] | undefined }

interface PrimaryArray {
  readonly name: string;
  alive: boolean;
  /** Down after a kill -9, until its restart (the disaster's `alive = false` is for good). */
  crashed: boolean;
  incarnation: number;
  machine: JournalPrimary;
  /** The primary-side log as it is in the page cache (a kill -9 keeps it all). */
  log: PrimaryLogRecord[];
  sequencer: Sequencer | undefined;
  /** The sequencer's log (p0). */
  seqLog: IssuedRecord[];
  /** The floors the logs were last trimmed at (trimming again at the same floor changes nothing). */
  loggedFloor: number;
  seqLoggedFloor: number;
  readonly volumes: string[];
  readonly pairs: Pair[];
  readonly writes: Map<number, HostWrite>;
}

interface SecondaryArray {
  readonly name: string;
  up: boolean;
  incarnation: number;
  machine: JournalSecondary;
  /** What survives a crash. */
  disk: SecondaryDurable;
  readonly images: Map<string, Uint8Array>;
  /** The oracle's expectation of the images at `modelPoint`. */
  readonly model: Map<string, Uint8Array>;
  modelPoint: number;
}

interface HostWrite {
  readonly id: number;
  readonly host: number;
  readonly array: string;
  readonly volume: string;
  readonly offset: number;
  readonly data: Uint8Array;
  /** The highest number of any piece of a write acknowledged before this one was issued. */
  readonly floor: number;
  tokens: Token[] | undefined;
  localDone: boolean;
  tokenDone: boolean;
  acked: boolean;
}

function cloneDurable(d: SecondaryDurable): SecondaryDurable {
  return {
    appliedUpTo: d.appliedUpTo, appliedTimeMs: d.appliedTimeMs, expected: new Map(d.expected), tokens: new Map(d.tokens),
    fromPrimary: new Set(d.fromPrimary), data: new Map(d.data), lastMessageMs: d.lastMessageMs, recoveredAt: d.recoveredAt,
  };
}

export function runJournalSeed(seed: number, options: JournalSeedOptions = {}): JournalSeedResult {
  const prng = new Prng(seed);
  const config: JournalSimConfig = { ...drawJournalConfig(prng), ...options.override };
  const sim = new JournalSim(seed, prng, config, options);
  let failure: string | undefined;
  try {
    sim.run();
  } catch (error) {
    if (!(error instanceof SimFailure) && !(error instanceof Error)) throw error;
    failure = error instanceof SimFailure ? error.message : `${error.name}: ${error.message}`;
  }
  return {
    seed, ok: failure === undefined, ...(failure !== undefined ? { failure } : {}), config,
    acked: sim.acked, issued: sim.issued, secondaryCrashes: sim.secondaryCrashes, primaryCrashes: sim.primaryCrashes, messages: sim.messages,
    report: sim.report, ackedBeyond: sim.ackedBeyond, virtualMs: sim.loop.now,
  };
}

class JournalSim {
  readonly loop = new EventLoop();
  readonly primaries: PrimaryArray[] = [];
  readonly secondaries: SecondaryArray[] = [];
  private readonly secondaryNames: string[];
  /** Every piece a primary got a number for: its token and bytes (the oracle's model). */
  private readonly pieces = new Map<number, { token: Token; data: Uint8Array; write: HostWrite }>();
  private readonly partitioned = new Map<string, number>();
  private nextWriteId = 1;
  private highestAcked = 0;
  private issuedWrites = 0;
  private lossRate: number;
  private dupRate: number;
  private faults = true;
  acked = 0;
  issued = 0;
  secondaryCrashes = 0;
  primaryCrashes = 0;
  messages = 0;
  report: RecoveryReport | null = null;
  ackedBeyond = 0;

  constructor(private readonly seed: number, private readonly prng: Prng, private readonly config: JournalSimConfig, private readonly options: JournalSeedOptions) {
    this.lossRate = config.lossRate;
    this.dupRate = config.dupRate;
    this.secondaryNames = Array.from({ length: config.secondaries }, (_, i) => `s${i}`);
    const volumeBytes = config.volumeUnits * UNIT;
    for (let i = 0; i < config.primaries; i++) {
      const name = `p${i}`;
      const volumes = Array.from({ length: config.volumesPerPrimary }, (_, j) => `${name}-v${j}`);
      const pairs: Pair[] = [];
      for (const volume of volumes) {
        const a = prng.pick(this.secondaryNames);
        if (config.secondaries > 1 && prng.chance(config.splitRate)) {
          const b = prng.pick(this.secondaryNames.filter((s) => s !== a));
          const half = Math.floor(config.volumeUnits / 2) * UNIT;
          pairs.push({ id: `${volume}>${a}`, volume, secondary: a, extents: [{ offset: 0, length: half }] });
          pairs.push({ id: `${volume}>${b}`, volume, secondary: b, extents: [{ offset: half, length: volumeBytes - half }] });
        } else {
          pairs.push({ id: `${volume}>${a}`, volume, secondary: a, extents: undefined });
        }
      }
      const machine = this.newPrimary(name, 1, undefined);
      const sequencer = i === 0 ? this.newSequencer(name, 1, []) : undefined;
      this.primaries.push({ name, alive: true, crashed: false, incarnation: 1, machine, log: [], sequencer, seqLog: [], loggedFloor: 0, seqLoggedFloor: 0, volumes, pairs, writes: new Map() });
    }
    for (const name of this.secondaryNames) {
      const disk = emptyDurable();
      const images = new Map<string, Uint8Array>();
      const model = new Map<string, Uint8Array>();
      for (const p of this.primaries) for (const pair of p.pairs) {
        if (pair.secondary !== name || images.has(pair.volume)) continue;
        images.set(pair.volume, new Uint8Array(volumeBytes));
        model.set(pair.volume, new Uint8Array(volumeBytes));
      }
      this.secondaries.push({ name, up: true, incarnation: 1, machine: this.newSecondary(name, cloneDurable(disk)), disk, images, model, modelPoint: 0 });
    }
  }

  private newPrimary(name: string, incarnation: number, log: readonly PrimaryLogRecord[] | undefined): JournalPrimary {
    const c = this.config;
    return new JournalPrimary({
      journal: JOURNAL, self: name, sequencer: 'p0', tokens: c.tokens, intervalMs: c.intervalMs,
      batchBytes: c.batchBytes, retransmitMs: 4 * c.maxDelayMs + 5, windowMessages: 64, incarnation,
      maxPendingBytes: c.maxPendingBytes, log: true,
    }, this.options.bugs, log ? replayPrimaryLog(log) : undefined);
  }

  private newSequencer(name: string, incarnation: number, logged: readonly IssuedRecord[]): Sequencer {
    return new Sequencer({
      journal: JOURNAL, self: name, secondaries: this.secondaryNames, retransmitMs: 4 * this.config.maxDelayMs + 5, windowMessages: 64, incarnation, log: true,
    }, 1, this.options.bugs?.sequencerForgetsLog ? [] : logged);
  }

  private newSecondary(name: string, durable: SecondaryDurable): JournalSecondary {
    return new JournalSecondary({ journal: JOURNAL, self: name, secondaries: this.secondaryNames, announceMs: 4 * this.config.maxDelayMs + 5 }, durable, this.options.bugs);
  }

  private trace(line: string): void {
    this.options.trace?.(`${this.loop.now.toFixed(2)} ${line}`);
  }

  private fail(message: string): never {
    throw new SimFailure(`seed ${this.seed}: ${message}`);
  }

  run(): void {
    const c = this.config;
    for (let h = 0; h < c.hosts; h++) this.loop.at(this.prng.next() * 2, () => this.issue(h));
    this.loop.every(1, () => this.tick());
    if (c.partitions) this.schedulePartitions();
    if (c.secondaryCrashes) this.scheduleCrashes();
    const crashable = [...(c.sequencerCrashes ? [this.primaries[0]!] : []), ...(c.primaryCrashes ? this.primaries.slice(1) : [])];
    if (crashable.length > 0) this.schedulePrimaryCrashes(crashable);
    const limitMs = 60_000;
    this.loop.runWhile(() => this.issuedWrites < c.writes && this.loop.now < limitMs && this.primaries.some((p) => p.alive));
    if (c.disaster) return this.disaster();
    // Let what was issued complete under faults, then heal and demand convergence.
    this.loop.runWhile(() => this.outstanding() > 0 && this.loop.now < limitMs);
    this.heal();
    // A restarted primary's re-asked request may still get numbers: wait until none is out.
    const deadline = this.loop.now + 20_000;
    const seq = this.primaries[0]!.sequencer!;
    this.loop.runWhile(() => this.loop.now < deadline &&
      (this.primaries.some((p) => p.machine.requestPending) || this.secondaries.some((s) => s.machine.appliedUpTo < seq.issued)));
    const issued = seq.issued;
    const behind = this.secondaries.filter((s) => s.machine.appliedUpTo < issued);
    if (behind.length > 0) {
      this.fail(`liveness: after healing, ${behind.map((s) => `${s.name} applied ${s.machine.appliedUpTo}`).join(', ')} of ${issued} issued (outstanding writes ${this.outstanding()})`);
    }
    for (const s of this.secondaries) this.checkPrefix(s, issued);
    this.issued = issued;
    const report = computeRecovery(this.secondaryNames, this.secondaries.map((s) => s.machine.queueState()), c.tokens);
    if (report.consistentSequence !== issued || report.lost.length + report.stranded.length + report.unacknowledged.length > 0) {
      this.fail(`a converged journal reports ${JSON.stringify({ point: report.consistentSequence, lost: report.lost.length, stranded: report.stranded.length })} (issued ${issued})`);
    }
  }

  private outstanding(): number {
    let n = 0;
    for (const p of this.primaries) n += p.writes.size;
    return n;
  }

  // ---- hosts ----

  private issue(host: number): void {
    if (this.issuedWrites >= this.config.writes) return;
    const live = this.primaries.filter((p) => p.alive && !p.crashed);
    if (live.length === 0) { if (this.primaries.some((p) => p.alive)) this.loop.at(this.loop.now + 5, () => this.issue(host)); return; }
    const p = this.prng.pick(live);
    const volume = this.prng.pick(p.volumes);
    const units = this.prng.int(1, Math.min(4, this.config.volumeUnits));
    const offset = this.prng.int(0, this.config.volumeUnits - units) * UNIT;
    const data = new Uint8Array(units * UNIT);
    this.prng.fill(data);
    const w: HostWrite = {
      id: this.nextWriteId++, host, array: p.name, volume, offset, data, floor: this.highestAcked,
      tokens: undefined, localDone: false, tokenDone: false, acked: false,
    };
    this.issuedWrites++;
    p.writes.set(w.id, w);
    const specs = splitWrite(p.pairs, volume, offset, data.length);
    this.trace(`${p.name} write ${w.id} ${volume}@${offset}+${data.length} (${specs.length} piece(s))`);
    p.machine.handle({ kind: 'write', writeId: w.id, specs, data: specs.map((t) => data.slice(t.offset - offset, t.offset - offset + t.length)) }, this.loop.now);
    this.pumpPrimary(p);
  }

  private maybeAck(p: PrimaryArray, w: HostWrite): void {
    if (!w.localDone || !w.tokenDone || w.acked || !p.alive || p.crashed) return;
    w.acked = true;
    p.writes.delete(w.id);
    this.acked++;
    for (const t of w.tokens!) this.highestAcked = Math.max(this.highestAcked, t.sequence);
    this.trace(`${p.name} ack write ${w.id} (${w.tokens!.map((t) => t.sequence).join(',')})`);
    this.loop.at(this.loop.now + this.prng.next() * 2, () => this.issue(w.host));
  }

  // ---- primaries ----

  private pumpPrimary(p: PrimaryArray): void {
    if (!p.alive || p.crashed) return;
    for (let round = 0; round < 4; round++) {
      const actions: Array<PrimaryAction | SequencerAction> = [...p.machine.poll(this.loop.now), ...(p.sequencer?.poll(this.loop.now) ?? [])];
      if (actions.length === 0) break;
      for (const a of actions) this.runPrimaryAction(p, a);
    }
    this.trimLog(p);
    if (p.sequencer && p.sequencer.logFloor !== p.seqLoggedFloor) {
      p.seqLoggedFloor = p.sequencer.logFloor;
      // Records every secondary has the tokens of go, except each requester's newest (a repeated
      // request must get the same grant; the newest of all holds the highest number).
      const floor = p.sequencer.logFloor;
      const newest = new Map<string, IssuedRecord>();
      for (const r of p.seqLog) newest.set(r.from, r);
      p.seqLog = p.seqLog.filter((r) => newest.get(r.from) === r || r.first + r.specs.length - 1 >= floor);
    }
  }

  /** What the app's log rotation does: between requests, records of acknowledged numbers go. */
  private trimLog(p: PrimaryArray): void {
    if (p.machine.requestPending) return;
    const floor = p.machine.logFloor;
    if (p.log.length === 0 || floor === p.loggedFloor) return;
    p.loggedFloor = floor;
    const grants = new Map<string, Extract<PrimaryLogRecord, { kind: 'grant' }>>();
    const counts = new Map<string, number>();
    for (const r of p.log) {
      if (r.kind === 'grant') grants.set(`${r.incarnation}/${r.requestId}`, r);
      else counts.set(`${r.incarnation}/${r.requestId}`, r.pieces.length);
    }
    p.log = p.log.filter((r) => {
      const k = `${r.incarnation}/${r.requestId}`;
      const g = grants.get(k);
      if (!g) return r.kind === 'request';
      return g.first + (counts.get(k) ?? 0) - 1 >= floor;
    });
  }

  /** The oracle learns a number's bytes from a grant of the log's pending request (no host write saw it). */
  private noteLogged(p: PrimaryArray, record: PrimaryLogRecord): void {
    if (record.kind === 'request') { p.log.push(record); return; }
    p.log.push(record);
    const req = p.log.find((x) => x.kind === 'request' && x.incarnation === record.incarnation && x.requestId === record.requestId);
    if (req?.kind !== 'request') return;
    req.pieces.forEach((piece, i) => {
      const q = record.first + i;
      if (this.pieces.has(q)) return;
      const write: HostWrite = {
        id: 0, host: -1, array: p.name, volume: piece.spec.volume, offset: piece.spec.offset, data: piece.data ?? new Uint8Array(piece.spec.length),
        floor: 0, tokens: undefined, localDone: true, tokenDone: true, acked: false,
      };
      this.pieces.set(q, { token: { ...piece.spec, sequence: q, timeMs: record.timeMs }, data: write.data, write });
    });
  }

  private runPrimaryAction(p: PrimaryArray, a: PrimaryAction | SequencerAction): void {
    switch (a.kind) {
      case 'request':
        return this.deliver(p.name, a.to, () => {
          const seqArray = this.primaries.find((x) => x.name === a.to)!;
          seqArray.sequencer!.handle({ kind: 'request', from: p.name, incarnation: a.incarnation, requestId: a.requestId, specs: a.specs }, this.loop.now);
          this.pumpPrimary(seqArray);
        });
      case 'grant':
        return this.deliver(p.name, a.to, () => {
          const to = this.primaries.find((x) => x.name === a.to)!;
          to.machine.handle({ kind: 'grant', grant: a.grant }, this.loop.now);
          this.pumpPrimary(to);
        });
      case 'tokens': {
        const w = p.writes.get(a.writeId)!;
        w.tokens = [...a.tokens];
        for (const t of a.tokens) {
          if (t.sequence <= w.floor) this.fail(`order: write ${w.id} got number ${t.sequence} though a write numbered ${w.floor} was acknowledged before it was issued`);
          this.pieces.set(t.sequence, { token: t, data: w.data.subarray(t.offset - w.offset, t.offset - w.offset + t.length), write: w });
        }
        const incarnation = p.incarnation;
        this.loop.at(this.loop.now + this.prng.next() * 2, () => {
          if (!p.alive || p.crashed || p.incarnation !== incarnation) return;
          w.localDone = true;
          p.machine.handle({ kind: 'captured', writeId: w.id, data: w.tokens!.map((t) => w.data.slice(t.offset - w.offset, t.offset - w.offset + t.length)) }, this.loop.now);
          this.maybeAck(p, w);
          this.pumpPrimary(p);
        });
        return;
      }
      case 'log':
        if (a.record.kind === 'issued') { p.seqLog.push(a.record); return; }
        return this.noteLogged(p, a.record);
      case 'token-done': {
        const w = p.writes.get(a.writeId)!;
        w.tokenDone = true;
        this.maybeAck(p, w);
        return;
      }
      case 'send':
        this.messages++;
        return this.deliver(p.name, a.to, () => this.toSecondary(a.to, a.message));
      default: {
        const never: never = a;
        throw new Error(`unknown action ${JSON.stringify(never)}`);
      }
    }
  }

  // ---- secondaries ----

  private toSecondary(name: string, message: JournalMessage): void {
    const s = this.secondaries.find((x) => x.name === name)!;
    if (!s.up) return;
    s.machine.handle({ kind: 'message', message }, this.loop.now);
    this.pumpSecondary(s);
  }

  private pumpSecondary(s: SecondaryArray): void {
    if (!s.up) return;
    for (let round = 0; round < 4; round++) {
      const actions = s.machine.poll(this.loop.now);
      if (actions.length === 0) return;
      for (const a of actions) this.runSecondaryAction(s, a);
    }
  }

  private runSecondaryAction(s: SecondaryArray, a: SecondaryAction): void {
    switch (a.kind) {
      case 'persist': {
        const d = s.disk;
        d.expected.set(a.stream, a.expected);
        for (const t of a.tokens) d.tokens.set(t.sequence, t);
        for (const q of a.fromPrimary) d.fromPrimary.add(q);
        for (const e of a.entries) d.data.set(e.token.sequence, e.data);
        d.lastMessageMs = a.lastMessageMs;
        return;
      }
      case 'send':
        return this.deliver(s.name, a.to, () => {
          const p = this.primaries.find((x) => x.name === a.to);
          if (!p?.alive || p.crashed) return;
          const ack = a.message.ackUpTo ?? 0;
          if (a.message.role === 'sequencer') p.sequencer?.handle({ kind: 'ack', from: s.name, ackUpTo: ack, ...(a.message.incarnation === undefined ? {} : { incarnation: a.message.incarnation }) }, this.loop.now);
          else p.machine.handle({ kind: 'ack', from: s.name, ackUpTo: ack, ...(a.message.incarnation === undefined ? {} : { incarnation: a.message.incarnation }) }, this.loop.now);
          this.pumpPrimary(p);
        });
      case 'announce':
        for (const other of this.secondaries) {
          if (other === s) continue;
          this.deliver(s.name, other.name, () => {
            if (!other.up) return;
            other.machine.handle({ kind: 'watermark', from: s.name, completeUpTo: a.completeUpTo }, this.loop.now);
            this.pumpSecondary(other);
          });
        }
        return;
      case 'apply': {
        const incarnation = s.incarnation;
        let t = this.loop.now;
        // Entries reach the disk one by one (a crash may stop the apply halfway), then a flush.
        for (const e of a.entries) {
          t += this.prng.next() * 0.5;
          this.loop.at(t, () => {
            if (!s.up || s.incarnation !== incarnation) return;
            const image = s.images.get(e.token.volume)!;
            if (e.data === null) image.fill(0, e.token.offset, e.token.offset + e.token.length); else image.set(e.data, e.token.offset);
          });
        }
        this.loop.at(t + this.prng.next(), () => {
          if (!s.up || s.incarnation !== incarnation) return;
          s.machine.handle({ kind: 'applied', upTo: a.upTo }, this.loop.now);
          this.checkPrefix(s, a.upTo);
          this.pumpSecondary(s);
        });
        return;
      }
      case 'prune': {
        const d = s.disk;
        d.appliedUpTo = a.upTo;
        d.appliedTimeMs = a.timeMs;
        for (const q of [...d.tokens.keys()]) if (q <= a.upTo) d.tokens.delete(q);
        for (const q of [...d.data.keys()]) if (q <= a.upTo) d.data.delete(q);
        for (const q of [...d.fromPrimary]) if (q <= a.upTo) d.fromPrimary.delete(q);
        return;
      }
      default: {
        const never: never = a;
        throw new Error(`unknown action ${JSON.stringify(never)}`);
      }
    }
  }

  /** The secondary's volumes hold exactly its pieces numbered up to `point`. */
  private checkPrefix(s: SecondaryArray, point: number): void {
    for (let q = s.modelPoint + 1; q <= point; q++) {
      const piece = this.pieces.get(q);
      // No primary ever got this number back: no secondary can hold its data, so no one may pass it.
      if (!piece) this.fail(`prefix: ${s.name} applied up to ${point}, past ${q}, a number no primary had written (yet)`);
      if (piece.token.secondary === s.name) s.model.get(piece.token.volume)!.set(piece.data, piece.token.offset);
    }
    s.modelPoint = point;
    for (const [volume, image] of s.images) {
      const model = s.model.get(volume)!;
      for (let i = 0; i < image.length; i++) {
        if (image[i] !== model[i]) {
          this.fail(`prefix: ${s.name} applied up to ${point} but ${volume} byte ${i} differs from the first ${point} writes (unit ${Math.floor(i / UNIT)})`);
        }
      }
    }
  }

  // ---- network ----

  private deliver(from: string, to: string, fn: () => void): void {
    if (from === to) { this.loop.at(this.loop.now, fn); return; }
    if (this.faults) {
      if ((this.partitioned.get(linkKey(from, to)) ?? -1) > this.loop.now) return;
      if (this.prng.chance(this.lossRate)) return;
    }
    const delay = (): number => 0.05 + this.prng.next() * this.config.maxDelayMs;
    const guarded = (): void => {
      if (this.primaries.some((p) => p.name === to && (!p.alive || p.crashed))) return;
      fn();
    };
    this.loop.at(this.loop.now + delay(), guarded);
    if (this.faults && this.prng.chance(this.dupRate)) this.loop.at(this.loop.now + delay(), guarded);
  }

  private tick(): void {
    for (const p of this.primaries) this.pumpPrimary(p);
    for (const s of this.secondaries) this.pumpSecondary(s);
  }

  private schedulePartitions(): void {
    const names = [...this.primaries.map((p) => p.name), ...this.secondaryNames];
    const next = (): void => {
      if (!this.faults) return;
      const a = this.prng.pick(names);
      const b = this.prng.pick(names.filter((n) => n !== a));
      this.partitioned.set(linkKey(a, b), this.loop.now + this.prng.int(5, 60));
      this.loop.at(this.loop.now + this.prng.int(10, 80), next);
    };
    this.loop.at(this.prng.int(1, 30), next);
  }

  private scheduleCrashes(): void {
    const next = (): void => {
      if (!this.faults) return;
      const s = this.prng.pick(this.secondaries);
      if (s.up) this.crash(s);
      this.loop.at(this.loop.now + this.prng.int(3, 40), () => this.restart(s));
      this.loop.at(this.loop.now + this.prng.int(20, 120), next);
    };
    this.loop.at(this.prng.int(5, 60), next);
  }

  private schedulePrimaryCrashes(crashable: readonly PrimaryArray[]): void {
    const next = (): void => {
      if (!this.faults) return;
      const p = this.prng.pick(crashable);
      if (p.alive && !p.crashed) this.crashPrimary(p);
      this.loop.at(this.loop.now + this.prng.int(3, 40), () => this.restartPrimary(p));
      this.loop.at(this.loop.now + this.prng.int(20, 120), next);
    };
    this.loop.at(this.prng.int(5, 60), next);
  }

  /** kill -9: the machine and every write in progress are gone; the log (page cache) stays. */
  private crashPrimary(p: PrimaryArray): void {
    this.trace(`${p.name} killed (log ${p.log.length} records, ${p.writes.size} writes in progress)`);
    p.crashed = true;
    p.incarnation++;
    this.primaryCrashes++;
    // Their hosts see an error and go on with their next write (to any live array).
    for (const w of p.writes.values()) this.loop.at(this.loop.now + 1, () => this.issue(w.host));
    p.writes.clear();
  }

  private restartPrimary(p: PrimaryArray): void {
    if (!p.crashed || !p.alive) return;
    p.crashed = false;
    p.machine = this.newPrimary(p.name, p.incarnation, p.log);
    if (p.sequencer) p.sequencer = this.newSequencer(p.name, p.incarnation, p.seqLog);
    this.trace(`${p.name} restarts from its log (${p.log.length} records${p.sequencer ? `; sequencer log ${p.seqLog.map((r) => `${r.from}#${r.incarnation}/${r.requestId}:${r.first}+${r.specs.length}`).join(' ')}, next ${p.sequencer.nextSequence}` : ''})`);
    this.pumpPrimary(p);
  }

  private crash(s: SecondaryArray): void {
    this.trace(`${s.name} crashes (applied ${s.machine.appliedUpTo}, complete ${s.machine.completeUpTo})`);
    s.up = false;
    s.incarnation++;
    this.secondaryCrashes++;
  }

  private restart(s: SecondaryArray): void {
    if (s.up) return;
    s.up = true;
    s.machine = this.newSecondary(s.name, cloneDurable(s.disk));
    this.trace(`${s.name} restarts (applied ${s.machine.appliedUpTo}, complete ${s.machine.completeUpTo})`);
    this.pumpSecondary(s);
  }

  private heal(): void {
    this.faults = false;
    this.lossRate = 0;
    this.dupRate = 0;
    this.partitioned.clear();
    for (const s of this.secondaries) this.restart(s);
    for (const p of this.primaries) this.restartPrimary(p);
  }

  // ---- disaster and recovery ----

  private disaster(): void {
    const c = this.config;
    const start = this.loop.now;
    for (const p of this.primaries) {
      this.loop.at(start + this.prng.next() * 5, () => { p.alive = false; this.trace(`${p.name} dies`); });
    }
    // Secondaries keep exchanging what reached them (the network stays as it was), then recover.
    this.loop.runWhile(() => this.loop.now < start + 5 + 40 * (c.maxDelayMs + 1));
    this.heal();
    this.loop.runWhile(() => this.loop.now < start + 10 + 60 * (c.maxDelayMs + 1));
    // Let running applies finish, so every queue is at rest.
    this.loop.runWhile(() => this.secondaries.some((s) => s.machine.applyingUpTo !== undefined));
    const issued = this.primaries[0]!.sequencer!.issued;
    this.issued = issued;
    const report = computeRecovery(this.secondaryNames, this.secondaries.map((s) => s.machine.queueState()), c.tokens);
    this.report = report;
    this.trace(`recovery: point ${report.consistentSequence} of ${issued}, lost ${report.lost.length}, stranded ${report.stranded.length}, unacknowledged ${report.unacknowledged.length}`);
    for (const s of this.secondaries) {
      if (s.machine.appliedUpTo > report.consistentSequence) {
        this.fail(`recovery: ${s.name} had applied up to ${s.machine.appliedUpTo}, beyond the recovered point ${report.consistentSequence}`);
      }
    }
    // Stop the periodic machinery from applying anything more: recovery takes over.
    let pending = 0;
    for (const s of this.secondaries) {
      for (const a of s.machine.recover(report.consistentSequence, this.loop.now)) {
        if (a.kind === 'apply') pending++;
        this.runSecondaryAction(s, a);
      }
    }
    this.loop.runWhile(() => this.secondaries.some((s) => s.machine.appliedUpTo < report.consistentSequence) && pending > 0 && this.loop.now < start + 100_000);
    for (const s of this.secondaries) {
      if (s.machine.appliedUpTo !== report.consistentSequence) this.fail(`recovery: ${s.name} applied ${s.machine.appliedUpTo}, not the point ${report.consistentSequence}`);
      this.checkPrefix(s, report.consistentSequence);
    }
    this.checkReport(report);
  }

  private checkReport(r: RecoveryReport): void {
    const point = r.consistentSequence;
    const seen = new Set<number>();
    for (const [list, name] of [[r.lost, 'lost'], [r.stranded, 'stranded'], [r.unacknowledged, 'unacknowledged']] as const) {
      for (const e of list) {
        if (e.sequence <= point) this.fail(`report: ${name} entry ${e.sequence} is not beyond the point ${point}`);
        if (seen.has(e.sequence)) this.fail(`report: ${e.sequence} listed twice`);
        seen.add(e.sequence);
        const piece = this.pieces.get(e.sequence);
        if (piece) {
          const t = piece.token;
          if (t.volume !== e.volume || t.offset !== e.offset || t.length !== e.length) {
            this.fail(`report: ${name} entry ${e.sequence} says ${e.volume}@${e.offset}+${e.length}, the write was ${t.volume}@${t.offset}+${t.length}`);
          }
          if (name === 'unacknowledged' && piece.write.acked) this.fail(`report: write ${piece.write.id} (number ${e.sequence}) was acknowledged but reported unacknowledged`);
        } else if (name === 'stranded') {
          this.fail(`report: stranded entry ${e.sequence} was never written by a primary`);
        } else if (this.config.tokens === 'sync' && name === 'lost') {
          this.fail(`report: lost entry ${e.sequence} never reached its primary; with tokens sync it cannot be acknowledged and must not be reported lost`);
        }
      }
    }
    for (const [q, piece] of this.pieces) if (q > point && piece.write.acked) this.ackedBeyond++;
    if (this.config.tokens !== 'sync') return;
    const reported = new Set([...r.lost, ...r.stranded].map((e) => e.sequence));
    for (const [q, piece] of this.pieces) {
      if (q > point && piece.write.acked && !reported.has(q)) {
        this.fail(`report: write ${piece.write.id} was acknowledged, its piece ${q} is beyond the point ${point}, and the report does not list it`);
      }
    }
  }
}

const linkKey = (a: string, b: string): string => (a < b ? `${a}|${b}` : `${b}|${a}`);
