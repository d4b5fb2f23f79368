// Seeded pseudo-random numbers (sfc32, seeded through splitmix32). The core and the simulator
// take one of these instead of Math.random so every run is reproducible from its seed.

function splitmix32(state: number): [number, number] {
  state = (state + 0x9e3779b9) | 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [state, (z ^ (z >>> 16)) >>> 0];
}

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    let s = seed | 0;
    let v: number;
    [s, v] = splitmix32(s); this.a = v;
    [s, v] = splitmix32(s); this.b = v;
    [s, v] = splitmix32(s); this.c = v;
    [s, v] = splitmix32(s); this.d = v;
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform float in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [min, max] inclusive. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[this.int(0, items.length - 1)]!;
  }

  fill(buffer: Uint8Array): void {
    for (let i = 0; i < buffer.length; i += 4) {
      const v = this.nextU32();
      buffer[i] = v & 0xff;
      if (i + 1 < buffer.length) buffer[i + 1] = (v >>> 8) & 0xff;
      if (i + 2 < buffer.length) buffer[i + 2] = (v >>> 16) & 0xff;
      if (i + 3 < buffer.length) buffer[i + 3] = v >>> 24;
    }
  }

  /** A child generator, so adding draws in one component does not shift another's sequence. */
  fork(): Prng {
    return new Prng(this.nextU32());
  }
}
