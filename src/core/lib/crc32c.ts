// CRC-32C (Castagnoli), slicing-by-8 over Uint8Array. Used for metadata records and link frames.

const POLY = 0x82f63b78;
const TABLES: Uint32Array[] = (() => {
  const tables: Uint32Array[] = [];
  const t0 = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[i] = c >>> 0;
  }
  tables.push(t0);
  for (let t = 1; t < 8; t++) {
    const prev = tables[t - 1]!;
    const next = new Uint32Array(256);
    for (let i = 0; i < 256; i++) next[i] = (prev[i]! >>> 8) ^ t0[prev[i]! & 0xff]!;
    tables.push(next);
  }
  return tables;
})();
const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES as [
  Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];

type Crc32c = (data: Uint8Array, initial: number) => number;
let accelerated: Crc32c | undefined;
/** Below this, calling out costs more than the table loop. */
const ACCELERATE_FROM_BYTES = 256;

/**
 * Lets the composition root install an implementation with identical results that uses the CPU's
 * CRC32 instruction (the native addon): the core stays pure, link frames stop costing ~4 µs per
 * 4 KiB. Refused unless it agrees with this one on a self-test.
 */
export function installCrc32c(implementation: Crc32c): boolean {
  const sample = new Uint8Array(1031);
  for (let i = 0; i < sample.length; i++) sample[i] = (i * 131 + 7) & 0xff;
  for (const initial of [0, 0x1234_5678]) {
    if (implementation(sample, initial) !== softCrc32c(sample, initial)) return false;
  }
  accelerated = implementation;
  return true;
}

export function crc32c(data: Uint8Array, initial = 0): number {
  if (accelerated && data.length >= ACCELERATE_FROM_BYTES) return accelerated(data, initial);
  return softCrc32c(data, initial);
}

function softCrc32c(data: Uint8Array, initial: number): number {
  let crc = ~initial >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 8 <= n; i += 8) {
    const lo = (crc ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    crc = T7[lo & 0xff]! ^ T6[(lo >>> 8) & 0xff]! ^ T5[(lo >>> 16) & 0xff]! ^ T4[lo >>> 24]! ^
      T3[data[i + 4]!]! ^ T2[data[i + 5]!]! ^ T1[data[i + 6]!]! ^ T0[data[i + 7]!]!;
  }
  for (; i < n; i++) crc = T0[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}
