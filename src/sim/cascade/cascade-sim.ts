// One seeded run of a cascade A → B → C (SPEC §7): the first site A writes dependent writes (one at a
// time, each after the previous) to a sync pair whose R2 is R2VOL on B; on B the product's
// CascadeMachine runs cycles through the product's CloneSession (R2VOL→CVOL) and the pair CVOL→CRVOL
// (its decisions the product's PairLifecycle, cascade-world.ts) to C, whose protection clone CPROT is
// again a CloneSession. Faults:
// kill -9 of B and of C in any phase, A–B and B–C link flaps (an A–B link that returns makes A resync
// R2VOL in any order: a torn image). Then a liveness phase heals everything and stops the writes.
//
// Oracle (outside the system):
// - every image B splits is a prefix of A's write sequence (a torn R2VOL is never split);
// - at every step once a cycle completed (before, C holds no image of R2VOL), C's recoverable image
//   (CPROT when split, else CRVOL: docs/design/cascade.md) is one of those split images, never older
//   than the last one seen, and never older than what B's persisted record says C holds (consistentAt);
// - after the liveness phase C's recoverable image equals A's final image and B's record says so:
//   no track changed in any cycle was lost.
import { Prng } from '../../core/lib/prng.js';
import { CascadeMachine, type CascadeAction, type CascadeActionKind, type CascadeFacts } from '../../core/cascade/cascade-machine.js';
import { newCascadeRecord, type CascadeRecord } from '../../core/cascade/cascade-record.js';
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { SimClone, SimPair } from './cascade-world.js';

export interface CascadeSimConfig {
  readonly tracks: number;
  /** null: cycles only on command (the run asks now and then). */
  readonly everyMs: number | null;
  readonly steps: number;
  readonly writeChance: number;
  /** Writes go to the first `hotTracks` tracks this often (a hot set). */
  readonly hotTracks: number;
  readonly hotChance: number;
  readonly bCrashChance: number;
  readonly cCrashChance: number;
  readonly abFlapChance: number;
  readonly bcFlapChance: number;
}

/** Bugs the oracle must catch (test/sim/cascade-seeds.test.ts breaks the run on purpose). */
export interface CascadeSimBugs {
  /** B reports the pair clean while it still owes tracks: C's clone is refreshed from a half-shipped CRVOL. */
  readonly earlyComplete?: boolean;
  /** The reattach forgets what R2VOL changed while the clone was split: those tracks never reach C. */
  readonly dropProtection?: boolean;
  /** C keeps a protection "held" while the clone is being refreshed (the rule before the fix). */
  readonly heldDuringRefresh?: boolean;
  /** B ignores its source's resync and splits whenever the clone is synchronized. */
  readonly ignoreSource?: boolean;
}

export interface CascadeSeedResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly failure?: string;
  readonly config: CascadeSimConfig;
  readonly cycles: number;
  readonly splits: number;
  readonly writes: number;
  /** B crashes by the phase the machine was in. */
  readonly bCrashes: Record<string, number>;
  readonly cCrashes: Record<string, number>;
  readonly flaps: number;
}

export function chooseCascadeConfig(prng: Prng): CascadeSimConfig {
  const tracks = prng.int(6, 40);
  return {
    tracks,
    everyMs: prng.pick([null, 15, 60, 200] as const),
    steps: prng.int(400, 1600),
    writeChance: prng.pick([0.2, 0.5, 0.8]),
    hotTracks: prng.int(1, Math.max(1, tracks >> 2)),
    hotChance: prng.pick([0, 0.5, 0.9]),
    bCrashChance: prng.pick([0, 0.003, 0.008]),
    cCrashChance: prng.pick([0, 0.003, 0.008]),
    abFlapChance: prng.pick([0, 0.004, 0.01]),
    bcFlapChance: prng.pick([0, 0.004, 0.01]),
  };
}

export const describeCascadeConfig = (c: CascadeSimConfig): string =>
  `${c.tracks} tracks, every ${c.everyMs ?? 'command'}, ${c.steps} steps, writes ${c.writeChance}, hot ${c.hotTracks}@${c.hotChance}, ` +
  `crash B ${c.bCrashChance} C ${c.cCrashChance}, flaps A-B ${c.abFlapChance} B-C ${c.bcFlapChance}`;

class Failure extends Error {}

export function runCascadeSeed(seed: number, bugs: CascadeSimBugs = {}, trace?: (line: string) => void): CascadeSeedResult {
  const prng = new Prng(seed);
  const config = chooseCascadeConfig(prng.fork());
  const n = config.tracks;
  let now = 1;
  // A: its image and every write's id per track (ids grow in issue order).
  const aImage = new Int32Array(n);
  const history: number[][] = Array.from({ length: n }, () => []);
  let wid = 0;
  // Before the cascade: R2VOL already holds data (so C's initial zeros are no image of it).
  const r2 = new Int32Array(n);
  for (let t = 0; t < n; t++) {
    aImage[t] = r2[t] = ++wid;
    history[t]!.push(wid);
  }
  let abUp = true;
  let abEpoch = 0;
  let bBoot = 0;
  const abOwed = new TrackBitmap(n);
  let confirmed: string | null = null;
  // B
  const cvol = new Int32Array(n);
  let clone: SimClone | undefined;
  const pair = new SimPair(n);
  let disk: CascadeRecord = newCascadeRecord({
    name: 'cas', volume: 'r2', clone: 'cv', peer: 'c', remoteVolume: 'cr', remoteClone: 'cp', everyMs: config.everyMs, createdAtMs: now,
  });
  let machine = new CascadeMachine(disk);
  let pendingRefresh = false;
  // C
  const crvol = new Int32Array(n);
  const cprot = new Int32Array(n);
  const initialC = crvol.slice();
  const cclone = new SimClone(crvol, cprot, now);
  while (cclone.copyOne(prng) >= 0);
  let held = false;
  let cWork: { reply: { epoch: number; kind: 'lifecycle' | 'cascade' } } | undefined;
  let bcUp = true;
  let bcEpoch = 0;
  // Oracle
  const images: { at: number; image: Int32Array }[] = [];
  let seenIdx = -1;
  const bCrashes: Record<string, number> = {};
  const cCrashes: Record<string, number> = {};
  let flaps = 0;
  const log = (line: string): void => trace?.(`${now} ${line}`);
  const epochName = (): string | null => (abUp ? `${bBoot}:${abEpoch}` : null);

  const fail = (why: string): never => {
    throw new Failure(why);
  };

  const isPrefix = (image: Int32Array): boolean => {
    const m = Math.max(...image);
    for (let t = 0; t < n; t++) {
      const h = history[t]!;
      let last = 0;
      for (const id of h) if (id <= m) last = id;
      if (image[t] !== last) return false;
    }
    return true;
  };
  const same = (a: Int32Array, b: Int32Array): boolean => a.every((v, i) => v === b[i]);

  const check = (): void => {
    const rec = cclone.session.state === 'split' ? cprot : crvol;
    let found = -2;
    for (let i = images.length - 1; i >= Math.max(0, seenIdx); i--) {
      if (same(images[i]!.image, rec)) {
        found = i;
        break;
      }
    }
    if (found === -2 && seenIdx === -1 && (same(initialC, rec) || disk.consistentAtMs === null)) return;
    if (found === -2) fail(`C's recoverable image (${cclone.session.state === 'split' ? 'CPROT' : 'CRVOL'}) is no complete cycle's image at or after split #${seenIdx}`);
    seenIdx = found;
    if (disk.consistentAtMs !== null) {
      const claimed = images.findIndex((i) => i.at === disk.consistentAtMs);
      if (claimed > seenIdx) fail(`B's record says C holds split #${claimed}, C's recoverable image is split #${seenIdx}`);
    }
  };

  // ---- B's pieces ----

  const markOut = (t: number): void => {
    if (pair.exists) pair.out.set(t);
  };

  const r2Write = (t: number, value: number): void => {
    r2[t] = value;
    clone?.stdWritten(t);
  };

  const facts = (): CascadeFacts => ({
    clone: clone ? { state: clone.session.state, splitAtMs: clone.session.splitAtMs } : { state: 'missing', splitAtMs: null },
    pair: pair.exists
      ? bugs.earlyComplete
        ? { exists: true, intent: pair.intent, owedTracks: 0, persistedOwed: 0, quiet: true, bytesShipped: 0 }
        : { exists: true, intent: pair.intent, owedTracks: pair.out.count(), persistedOwed: pair.outDisk.count(), quiet: pair.quiet, bytesShipped: 0 }
      : { exists: false },
    source: bugs.ignoreSource ? { kind: 'none' } : { kind: 'pair', upEpoch: epochName(), confirmedEpoch: confirmed },
    trackCount: n,
  });

  const crashB = (): void => {
    bCrashes[machine.phase] = (bCrashes[machine.phase] ?? 0) + 1;
    log(`kill -9 B in ${machine.phase}`);
    bBoot++;
    machine = new CascadeMachine(disk);
    pendingRefresh = false;
    clone?.crash(prng);
    pair.crashR1(prng, bcUp);
    // The A–B session is lost: A owes what it had in flight and resyncs it when B is back.
    for (let i = prng.int(0, 2); i > 0; i--) abOwed.set(prng.int(0, n - 1));
    confirmed = null;
    bcEpoch++;
  };

  const execute = (action: CascadeAction): CascadeActionKind | 'async' | 'persisted' | { failed: string } => {
    switch (action.type) {
      case 'persist':
        disk = action.record;
        return 'persisted';
      case 'establish-clone':
        clone ??= new SimClone(r2, cvol, now);
        return action.type;
      case 'reestablish-clone':
        if (clone!.session.state === 'split') {
          if (bugs.dropProtection) clone!.session.protection.clearAll();
          clone!.reestablish(now);
        }
        return action.type;
      case 'split-clone': {
        const s = clone!.session;
        if (s.state === 'split') return action.type;
        if (s.state !== 'synchronized') return { failed: `it is ${s.state}` };
        clone!.split(now, markOut);
        images.push({ at: now, image: r2.slice() });
        log(`split #${images.length - 1}`);
        if (!isPrefix(r2)) fail(`split #${images.length - 1} of R2VOL is no prefix of A's writes (R2VOL was torn)`);
        return action.type;
      }
      case 'suspend-pair':
        if (pair.exists && pair.intent === 'replicating') pair.setIntent('suspended');
        return action.type;
      case 'ship':
        if (!bcUp) return { failed: 'link down' };
        if (!pair.exists) {
          // pair create: a full establish that ships at once (C has no image of R2VOL yet).
          pair.out.setAll();
          pair.outDisk = pair.out.copy();
          pair.create(bcUp);
        } else if (pair.intent === 'suspended') {
          // PairCommands.resume: the record is saved (the bitmaps with it), then the resync is
          // started, a few turns later: a tick of the pair may come in between.
          pair.outDisk = pair.out.copy();
          pair.setIntent('replicating');
          pair.resyncPending = true;
          log(`pair resumed, owes ${pair.out.count()}`);
        }
        return action.type;
      case 'refresh-remote':
        if (!bcUp) return { failed: 'link down' };
        pendingRefresh = true;
        protectAtC(true, 'cascade');
        return 'async';
      case 'finish':
        return action.type;
    }
  };

  const runMachine = (): void => {
    machine.handle({ type: 'tick', facts: facts() }, now);
    for (const action of machine.poll()) {
      if (prng.chance(config.bCrashChance)) return crashB();
      const r = execute(action);
      if (r === 'persisted' || r === 'async') continue;
      if (typeof r === 'object') machine.handle({ type: 'failed', action: action.type as CascadeActionKind, error: r.failed }, now);
      else machine.handle({ type: 'done', action: r }, now);
    }
  };

  // ---- C's pieces ----

  const protectAtC = (whole: boolean, kind: 'lifecycle' | 'cascade'): void => {
    if (cWork) {
      cWork.reply = { epoch: bcEpoch, kind };
      return;
    }
    if (!whole && held) {
      reply(kind, bcEpoch);
      return;
    }
    if (!bugs.heldDuringRefresh) held = false;
    if (cclone.session.state === 'split') cclone.reestablish(now);
    cWork = { reply: { epoch: bcEpoch, kind } };
  };

  const reply = (kind: 'lifecycle' | 'cascade', epoch: number): void => {
    if (epoch !== bcEpoch || !bcUp) return; // the requester's session is gone: it retries
    if (kind === 'lifecycle') {
      if (pair.step?.kind === 'protect') {
        const { epoch: stepEpoch } = pair.step;
        pair.step = undefined;
        pair.lifecycle?.handle({ type: 'step-done', step: 'protect', epoch: stepEpoch }, now);
      }
    } else if (pendingRefresh) {
      pendingRefresh = false;
      machine.handle({ type: 'done', action: 'refresh-remote' }, now);
    }
  };

  const cStep = (): void => {
    if (!cWork) return;
    if (cclone.copyOne(prng) >= 0) return;
    if (cclone.session.state !== 'synchronized') return;
    cclone.split(now, () => undefined);
    held = true;
    const r = cWork.reply;
    cWork = undefined;
    log('C split CPROT');
    reply(r.kind, r.epoch);
  };

  const crashC = (): void => {
    cCrashes[machine.phase] = (cCrashes[machine.phase] ?? 0) + 1;
    log(`kill -9 C in ${machine.phase}`);
    cclone.crash(prng);
    // The crash's spurious hot tracks mark CPROT's session too; while split, those are only
    // protection bits (copied at the next refresh).
    cWork = undefined;
    bcEpoch++;
    pair.lostSession(true);
    // C is back at once: a new link session.
    if (bcUp) pair.lifecycle?.handle({ type: 'link-up' }, now);
    if (pendingRefresh) {
      pendingRefresh = false;
      machine.handle({ type: 'failed', action: 'refresh-remote', error: 'peer restarted' }, now);
    }
  };

  // ---- the pair's lifecycle on B ----

  const pairStep = (): void => {
    const lc = pair.lifecycle;
    if (!lc || !bcUp) return;
    // C answers the step under way (a status question, the confirmation), one turn later or more.
    if (pair.step && pair.step.kind !== 'protect' && prng.chance(0.5)) {
      const { kind, epoch } = pair.step;
      pair.step = undefined;
      if (kind === 'ask') {
        lc.handle({ type: 'peer-status', epoch, status: { exists: true, role: 'R2', intent: pair.intent, generation: 1 } }, now);
      } else {
        // PairManager's confirm-replicating: set-intent answered, then the resync, then the step ends.
        lc.handle({ type: 'resync', facts: pair.facts() }, now);
        lc.handle({ type: 'step-done', step: 'reconcile', epoch }, now);
      }
    } else if (pair.resyncPending && prng.chance(0.5)) {
      pair.resyncPending = false;
      log('pair resync started');
      lc.handle({ type: 'resync', facts: pair.facts() }, now);
    } else {
      lc.handle({ type: 'tick', facts: pair.facts() }, now);
    }
    for (const action of lc.poll()) {
      switch (action.type) {
        case 'ask-peer-status': pair.step = { kind: 'ask', epoch: action.epoch }; break;
        case 'confirm-replicating': pair.step = { kind: 'confirm', epoch: action.epoch }; break;
        case 'protect':
          pair.step = { kind: 'protect', epoch: action.epoch };
          log(`pair asks C to protect (whole: ${String(action.whole)}), owes ${pair.out.count()}`);
          protectAtC(action.whole, 'lifecycle');
          break;
        case 'push': break; // shipping below, while the lifecycle allows it
        default: fail(`the cascade's pair asked for ${action.type}`);
      }
    }
    if (pair.mayShip && !pair.out.isEmpty()) {
      const t = prng.pick(pair.out.toArray());
      log(`pair ships track ${t}`);
      crvol[t] = cvol[t]!;
      cclone.stdWritten(t);
      pair.out.clear(t);
      pair.unflushed.set(t);
    }
    if (prng.chance(0.15)) pair.flushRound();
    lc.handle({ type: 'r2-whole', facts: pair.facts() }, now);
  };

  const step = (safety: boolean): void => {
    now += prng.int(1, 8);
    if (safety && prng.chance(config.writeChance)) {
      const t = prng.chance(config.hotChance) ? prng.int(0, config.hotTracks - 1) : prng.int(0, n - 1);
      aImage[t] = ++wid;
      history[t]!.push(wid);
      if (abUp) r2Write(t, wid);
      else abOwed.set(t);
    }
    // A's resync of R2VOL (any order) while the link is up; B's app asks A whether it owes anything.
    if (abUp && !abOwed.isEmpty() && prng.chance(0.5)) {
      const t = prng.pick(abOwed.toArray());
      r2Write(t, aImage[t]!);
      abOwed.clear(t);
    }
    if (abUp && abOwed.isEmpty() && prng.chance(0.3)) confirmed = epochName();
    if (clone && prng.chance(0.7)) {
      const t = clone.copyOne(prng);
      if (t >= 0) markOut(t);
    }
    pairStep();
    if (prng.chance(0.7)) cStep();
    if (config.everyMs === null && prng.chance(0.01)) machine.handle({ type: 'request-cycle' }, now);
    runMachine();
    if (safety) {
      if (prng.chance(config.bCrashChance)) crashB();
      if (prng.chance(config.cCrashChance)) crashC();
      if (prng.chance(config.abFlapChance)) {
        flaps++;
        abUp = !abUp;
        if (abUp) abEpoch++;
        log(`A-B link ${abUp ? 'up' : 'down'}`);
      }
      if (prng.chance(config.bcFlapChance)) {
        flaps++;
        bcUp = !bcUp;
        if (bcUp) {
          pair.lifecycle?.handle({ type: 'link-up' }, now);
        } else {
          bcEpoch++;
          pair.lostSession(false);
          if (pendingRefresh) {
            pendingRefresh = false;
            machine.handle({ type: 'failed', action: 'refresh-remote', error: 'link down' }, now);
          }
        }
        log(`B-C link ${bcUp ? 'up' : 'down'}`);
      }
    }
    check();
  };

  const result = (ok: boolean, failure?: string): CascadeSeedResult => ({
    seed, ok, ...(failure !== undefined ? { failure } : {}), config, cycles: disk.cycles, splits: images.length, writes: wid - n,
    bCrashes, cCrashes, flaps,
  });

  try {
    for (let i = 0; i < config.steps; i++) step(true);
    // Liveness: links heal, writes stop; a cycle that starts after the last write must complete.
    if (!abUp) {
      abUp = true;
      abEpoch++;
    }
    if (!bcUp) {
      bcUp = true;
      pair.lifecycle?.handle({ type: 'link-up' }, now);
    }
    const lastWrite = now;
    for (let i = 0; i < 40_000; i++) {
      if (config.everyMs === null && disk.phase === 'complete' && prng.chance(0.05)) machine.handle({ type: 'request-cycle' }, now);
      step(false);
      if (disk.phase === 'complete' && disk.consistentAtMs !== null && disk.consistentAtMs > lastWrite && machine.busy === undefined) {
        const rec = cclone.session.state === 'split' ? cprot : crvol;
        if (!same(rec, aImage)) fail(`after the liveness phase C's recoverable image differs from A's in tracks ${[...rec].flatMap((v, t) => (v !== aImage[t] ? [t] : [])).join(',')}`);
        return result(true);
      }
    }
    return fail(`no cycle completed after the last write within the liveness phase (phase ${machine.phase}, ${machine.lastError ?? machine.waitingFor ?? ''}; ` +
      `pair ${pair.intent} owes ${pair.out.count()} (${pair.outDisk.count()} on disk)${pair.lifecycle?.needsProtection ? ', needs protection' : ''}${pair.step ? `, ${pair.step.kind} with C` : ''}; ` +
      `CPROT ${cclone.session.state}${cWork ? ' (refreshing)' : ''})`);
  } catch (error) {
    if (error instanceof Failure) return result(false, error.message);
    return result(false, `crashed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
  }
}
