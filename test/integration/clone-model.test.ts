// Model-based test of clone sessions through the real array code (Volume, CloneManager, file
// adapters): random host writes to the standard volume and to split clones, every command on three
// sessions in random order, copies racing host I/O, and crashes (state abandoned without any
// clean-up, then reopened from disk). Oracle: byte arrays of what each host must see.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArrayService, type ArrayDeps } from '../../src/app/array-service.js';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournalFactory } from '../../src/adapters/fs/file-meta-store.js';
import { DEFAULT_ACTIVITY_LOG } from '../../src/core/bitmap/activity-log.js';
import { Prng } from '../../src/core/lib/prng.js';
import { isTidemarkError } from '../../src/core/errors.js';

const TRACK = 4096;
const TRACKS = 48;
const SIZE = TRACK * TRACKS;
const CLONES = ['c0', 'c1', 'c2'];
const SEEDS = Number(process.env.TIDEMARK_CLONE_SEEDS ?? 25);
const STEPS = 70;

interface SessionModel {
  state: 'attached' | 'split' | 'restoring';
  /** What the clone's hosts must read while split. */
  image: Uint8Array;
  /** Tracks std's hosts wrote since the split, and tracks the clone's hosts wrote. */
  stdChanged: Set<number>;
  cloneChanged: Set<number>;
  /** A crash since the split: recovery may mark more tracks (never fewer), so counts are lower bounds. */
  crashed: boolean;
}

function assertCopies(seed: number, what: string, actual: number, expected: number, crashed: boolean): void {
  if (crashed) assert.ok(actual >= expected, `seed ${seed}: ${what} copies ${actual} tracks, fewer than the ${expected} required`);
  else assert.equal(actual, expected, `seed ${seed}: ${what} must copy exactly the changed tracks`);
}

async function openArray(dir: string): Promise<ArrayService> {
  const deps: ArrayDeps = {
    name: 'model', meta: await FileMetaStore.open(join(dir, 'meta')),
    stores: new FileBlockStoreFactory(join(dir, 'volumes')), journals: new FileSlotJournalFactory(join(dir, 'volumes')),
    nowMs: () => Date.now(), activityLog: { ...DEFAULT_ACTIVITY_LOG, maxActiveExtents: 16 },
  };
  return ArrayService.open(deps);
}

async function settle(service: ArrayService, std: string, clone: string, target: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (service.clones.show(std, clone).state !== target) {
    if (Date.now() > deadline) throw new Error(`${clone} stuck: ${JSON.stringify(service.clones.show(std, clone))}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function runSeed(seed: number): Promise<void> {
  const prng = new Prng(seed);
  const dir = await mkdtemp(join(tmpdir(), `tidemark-clone-model-${seed}-`));
  await mkdir(join(dir, 'volumes'));
  let service = await openArray(dir);
  try {
    await service.createVolume('std', SIZE, TRACK);
    for (const c of CLONES) await service.createVolume(c, SIZE, TRACK);
    const std = new Uint8Array(SIZE);
    const sessions = new Map<string, SessionModel>();
    let stamp = 1;

    const writeStd = async (): Promise<void> => {
      const first = prng.int(0, TRACKS - 1);
      const count = prng.int(1, 3);
      const offset = first * TRACK + prng.int(0, 3) * 1024;
      const length = Math.min(SIZE - offset, count * TRACK - prng.int(0, 1) * 512);
      const value = (stamp++ % 254) + 1;
      await service.volume('std').write(offset, new Uint8Array(length).fill(value));
      std.fill(value, offset, offset + length);
      for (const s of sessions.values()) {
        for (let t = Math.floor(offset / TRACK); t <= Math.floor((offset + length - 1) / TRACK); t++) s.stdChanged.add(t);
      }
    };
    const writeClone = async (name: string, s: SessionModel): Promise<void> => {
      const track = prng.int(0, TRACKS - 1);
      const value = (stamp++ % 254) + 1;
      await service.volume(name).write(track * TRACK, new Uint8Array(TRACK).fill(value));
      s.image.fill(value, track * TRACK, (track + 1) * TRACK);
      s.cloneChanged.add(track);
    };
    const check = async (where: string): Promise<void> => {
      const seen = await service.volume('std').read(0, SIZE);
      assert.ok(Buffer.from(seen).equals(Buffer.from(std)), `seed ${seed}: std differs from the model ${where}`);
      for (const [name, s] of sessions) {
        if (s.state !== 'split') continue;
        const image = await service.volume(name).read(0, SIZE);
        if (process.env.TIDEMARK_MODEL_TRACE && !Buffer.from(image).equals(Buffer.from(s.image))) {
          const bad = [];
          for (let t = 0; t < TRACKS; t++) if (!Buffer.from(image.subarray(t * TRACK, (t + 1) * TRACK)).equals(Buffer.from(s.image.subarray(t * TRACK, (t + 1) * TRACK)))) bad.push(t);
          console.log('differing tracks', name, bad, 'got', image[bad[0]! * TRACK], 'want', s.image[bad[0]! * TRACK]);
        }
        assert.ok(Buffer.from(image).equals(Buffer.from(s.image)), `seed ${seed}: ${name} differs from its split image ${where}`);
      }
    };

    for (let step = 0; step < STEPS; step++) {
      const clone = prng.pick(CLONES);
      const s = sessions.get(clone);
      const roll = prng.next();
      const where = `after step ${step}`;
      if (process.env.TIDEMARK_MODEL_TRACE) console.log(seed, step, clone, s?.state, roll.toFixed(3), service.clones.list().map((x) => `${x.clone}:${x.state}:${x.tracksToCopy}:${x.protectedTracks}:${x.cloneChangedTracks}`).join(' '));
      if (roll < 0.35) {
        await writeStd();
      } else if (roll < 0.45 && s?.state === 'split') {
        await writeClone(clone, s);
      } else if (roll < 0.55 && !s) {
        await service.clones.establish('std', clone);
        sessions.set(clone, { state: 'attached', image: new Uint8Array(SIZE), stdChanged: new Set(), cloneChanged: new Set(), crashed: false });
      } else if (roll < 0.68 && s && s.state !== 'split') {
        await settle(service, 'std', clone, s.state === 'restoring' ? 'restored' : 'synchronized');
        await service.clones.split('std', clone, prng.chance(0.3));
        Object.assign(s, { state: 'split', image: std.slice(), stdChanged: new Set(), cloneChanged: new Set(), crashed: false });
      } else if (roll < 0.76 && s?.state === 'split') {
        const expected = new Set([...s.stdChanged, ...s.cloneChanged]).size;
        const status = await service.clones.reestablish('std', clone);
        assertCopies(seed, 'reestablish', status.tracksToCopy + status.tracksCopied, expected, s.crashed);
        s.state = 'attached';
      } else if (roll < 0.84 && s?.state === 'split') {
        const incremental = prng.chance(0.5);
        const expected = incremental ? new Set([...s.stdChanged, ...s.cloneChanged]).size : TRACKS;
        const status = await service.clones.restore('std', clone, incremental);
        assertCopies(seed, incremental ? 'incremental restore' : 'restore', status.tracksToCopy + status.tracksCopied, expected, s.crashed);
        std.set(s.image); // instantly, the standard volume's hosts see the clone's image
        // Other sessions count the restored tracks as changed: all of them, or those changed on either side.
        const restored = incremental ? new Set([...s.stdChanged, ...s.cloneChanged]) : new Set(Array.from({ length: TRACKS }, (_, t) => t));
        for (const [other, o] of sessions) {
          if (other === clone) continue;
          for (const t of restored) o.stdChanged.add(t);
          if (s.crashed) o.crashed = true;
        }
        s.state = 'restoring';
      } else if (roll < 0.88 && s && s.state !== 'restoring') {
        await service.clones.terminate('std', clone);
        sessions.delete(clone);
      } else if (roll < 0.93) {
        // Crash: no flush, no persist, nothing cleaned up; then start again from what is on disk.
        await service.abandon();
        service = await openArray(dir);
        for (const [name, m] of sessions) {
          m.crashed = true;
          const state = service.clones.show('std', name).state;
          const expectedStates = m.state === 'split' ? ['split'] : m.state === 'restoring' ? ['restoring', 'restored'] : ['synchronizing', 'synchronized'];
          assert.ok(expectedStates.includes(state), `seed ${seed}: ${name} came back ${state}, expected ${expectedStates}`);
        }
      } else {
        const refused = s?.state === 'split' ? service.clones.split('std', clone, false) : service.clones.reestablish('std', clone);
        await assert.rejects(refused, (e) => isTidemarkError(e), `seed ${seed}: a command invalid in this state is refused`);
      }
      await check(where);
    }
  } finally {
    await service.close().catch(() => undefined);
    // The arrays abandoned at simulated crashes may still finish a metadata write (a new temporary
    // file) while the directory is removed: retry the removal rather than fail on ENOTEMPTY.
    await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }
}

test(`clone sessions against a byte-array model (${SEEDS} seeds × ${STEPS} steps, with crashes)`, async () => {
  const only = process.env.TIDEMARK_CLONE_SEED;
  if (only) return runSeed(Number(only));
  for (let seed = 1; seed <= SEEDS; seed++) await runSeed(seed);
});
