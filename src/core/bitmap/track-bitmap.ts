// A fixed-size bitmap over a volume's tracks, one bit per track, scanned a 32-bit word at a time.
// Invalid-track bitmaps, clone-session protection bits and change bitmaps are all TrackBitmaps;
// copy, resync and restore decisions are set algebra over them.
//
// The number of set tracks is kept as bits change, so count() and isEmpty() cost nothing whatever
// the volume's size: the write path asks them (a pair's clean round, a clone's pending restore),
// and a scan of a 16 TiB volume's bitmap takes milliseconds.
import { assert } from '../lib/assert.js';

function popcount32(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}

export interface TrackRun {
  /** First set track of the run. */
  readonly start: number;
  /** One past the last set track. */
  readonly end: number;
}

export class TrackBitmap {
  private readonly words: Uint32Array;
  private setTracks = 0;

  constructor(readonly size: number, words?: Uint32Array) {
    assert(Number.isSafeInteger(size) && size >= 0, `bitmap size ${size}`);
    const wordCount = Math.ceil(size / 32);
    if (words) {
      assert(words.length === wordCount, `bitmap words ${words.length} != ${wordCount}`);
      this.words = words;
      this.maskTail();
      for (let i = 0; i < words.length; i++) this.setTracks += popcount32(words[i]!);
    } else {
      this.words = new Uint32Array(wordCount);
    }
  }

  static full(size: number): TrackBitmap {
    const b = new TrackBitmap(size);
    b.setAll();
    return b;
  }

  /** Rebuilds a bitmap from toBytes() output; the byte length must match the size exactly. */
  static fromBytes(size: number, bytes: Uint8Array): TrackBitmap {
    const wordCount = Math.ceil(size / 32);
    assert(bytes.length === wordCount * 4, `bitmap bytes ${bytes.length} != ${wordCount * 4}`);
    const words = new Uint32Array(wordCount);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < wordCount; i++) words[i] = view.getUint32(i * 4, true);
    return new TrackBitmap(size, words);
  }

  toBytes(): Uint8Array {
    const out = new Uint8Array(this.words.length * 4);
    const view = new DataView(out.buffer);
    for (let i = 0; i < this.words.length; i++) view.setUint32(i * 4, this.words[i]!, true);
    return out;
  }

  private checkIndex(track: number): void {
    // The message is built only on failure: this runs several times for every write.
    if (!(Number.isInteger(track) && track >= 0 && track < this.size)) assert(false, `track ${track} outside bitmap of ${this.size}`);
  }

  private maskTail(): void {
    const rem = this.size % 32;
    if (rem !== 0 && this.words.length > 0) {
      this.words[this.words.length - 1]! &= 2 ** rem - 1;
    }
  }

  test(track: number): boolean {
    this.checkIndex(track);
    return (this.words[track >>> 5]! & (1 << (track & 31))) !== 0;
  }

  set(track: number): void {
    this.checkIndex(track);
    const w = track >>> 5;
    const bit = 1 << (track & 31);
    if ((this.words[w]! & bit) !== 0) return;
    this.words[w]! |= bit;
    this.setTracks++;
  }

  clear(track: number): void {
    this.checkIndex(track);
    const w = track >>> 5;
    const bit = 1 << (track & 31);
    if ((this.words[w]! & bit) === 0) return;
    this.words[w]! &= ~bit;
    this.setTracks--;
  }

  /** Sets tracks first..last inclusive. */
  setRange(first: number, last: number): void {
    this.applyRange(first, last, true);
  }

  /** Clears tracks first..last inclusive. */
  clearRange(first: number, last: number): void {
    this.applyRange(first, last, false);
  }

  private applyRange(first: number, last: number, value: boolean): void {
    if (last < first) return;
    this.checkIndex(first);
    this.checkIndex(last);
    let t = first;
    while (t <= last) {
      const w = t >>> 5;
      const bit = t & 31;
      const span = Math.min(32 - bit, last - t + 1);
      const mask = span === 32 ? 0xffffffff : (((1 << span) - 1) << bit) >>> 0;
      const before = this.words[w]!;
      const after = value ? (before | mask) >>> 0 : (before & ~mask) >>> 0;
      if (after !== before) {
        this.words[w] = after;
        this.setTracks += popcount32(after) - popcount32(before);
      }
      t += span;
    }
  }

  /** True when any track in first..last inclusive is set (scans only their words). */
  anyInRange(first: number, last: number): boolean {
    first = Math.max(0, first);
    last = Math.min(last, this.size - 1);
    if (this.setTracks === 0 || last < first) return false;
    const lastWord = last >>> 5;
    for (let w = first >>> 5; w <= lastWord; w++) {
      let word = this.words[w]!;
      if (w === first >>> 5) word &= ~((1 << (first & 31)) - 1);
      if (w === lastWord && (last & 31) !== 31) word &= (1 << ((last & 31) + 1)) - 1;
      if (word !== 0) return true;
    }
    return false;
  }

  setAll(): void {
    this.words.fill(0xffffffff);
    this.maskTail();
    this.setTracks = this.size;
  }

  clearAll(): void {
    this.words.fill(0);
    this.setTracks = 0;
  }

  count(): number {
    return this.setTracks;
  }

  isEmpty(): boolean {
    return this.setTracks === 0;
  }

  /** Index of the first set track at or after `from`, or -1. */
  nextSet(from: number): number {
    if (from >= this.size) return -1;
    let w = from >>> 5;
    let word = this.words[w]! & ~((1 << (from & 31)) - 1);
    for (;;) {
      if (word !== 0) {
        const idx = (w << 5) + (31 - Math.clz32(word & -word));
        return idx < this.size ? idx : -1;
      }
      w++;
      if (w >= this.words.length) return -1;
      word = this.words[w]!;
    }
  }

  /** Index of the first clear track at or after `from`, or -1. */
  nextClear(from: number): number {
    if (from >= this.size) return -1;
    let w = from >>> 5;
    let word = ~this.words[w]! & ~((1 << (from & 31)) - 1);
    for (;;) {
      if (word !== 0) {
        const idx = (w << 5) + (31 - Math.clz32(word & -word));
        return idx < this.size ? idx : -1;
      }
      w++;
      if (w >= this.words.length) return -1;
      word = ~this.words[w]!;
    }
  }

  /** Maximal runs of set tracks, in order. */
  *runs(): Generator<TrackRun> {
    let start = this.nextSet(0);
    while (start !== -1) {
      const clear = this.nextClear(start);
      const end = clear === -1 ? this.size : clear;
      yield { start, end };
      start = this.nextSet(end);
    }
  }

  /** Set tracks as a list (for small bitmaps, tests and reports). */
  toArray(): number[] {
    const out: number[] = [];
    for (const run of this.runs()) for (let t = run.start; t < run.end; t++) out.push(t);
    return out;
  }

  copy(): TrackBitmap {
    return new TrackBitmap(this.size, this.words.slice());
  }

  private checkSameSize(other: TrackBitmap): void {
    assert(other.size === this.size, `bitmap sizes differ: ${this.size} vs ${other.size}`);
  }

  /** this |= other */
  or(other: TrackBitmap): this {
    this.checkSameSize(other);
    if (other.setTracks === 0) return this;
    for (let i = 0; i < this.words.length; i++) this.words[i]! |= other.words[i]!;
    return this.recount();
  }

  /** this &= other */
  and(other: TrackBitmap): this {
    this.checkSameSize(other);
    for (let i = 0; i < this.words.length; i++) this.words[i]! &= other.words[i]!;
    return this.recount();
  }

  /** this &= ~other */
  andNot(other: TrackBitmap): this {
    this.checkSameSize(other);
    if (other.setTracks === 0) return this;
    for (let i = 0; i < this.words.length; i++) this.words[i]! &= ~other.words[i]!;
    return this.recount();
  }

  /** After a whole-bitmap operation (which scanned every word anyway). */
  private recount(): this {
    let n = 0;
    for (let i = 0; i < this.words.length; i++) n += popcount32(this.words[i]!);
    this.setTracks = n;
    return this;
  }

  /** True when every set track of this is also set in other. */
  isSubsetOf(other: TrackBitmap): boolean {
    this.checkSameSize(other);
    for (let i = 0; i < this.words.length; i++) if ((this.words[i]! & ~other.words[i]!) !== 0) return false;
    return true;
  }

  equals(other: TrackBitmap): boolean {
    if (other.size !== this.size) return false;
    for (let i = 0; i < this.words.length; i++) if (this.words[i] !== other.words[i]) return false;
    return true;
  }
}
