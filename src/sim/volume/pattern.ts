// Self-describing data for the volume workload. The volume is divided into 512-byte units; a unit
// written by operation `id` holds [id, unit, 126 words derived from both], so a read tells which
// operation's bytes it returned (0 = zeros) or that they are garbage (a mix, a shifted copy).
// Units never tear: the simulated disk tears at 4 KiB sectors and the workload is unit-aligned, so
// checking the header and a few sampled words identifies a unit.
export const UNIT_BYTES = 512;
const WORDS = UNIT_BYTES / 4;
const SAMPLED = [2, 37, 64, 101, WORDS - 1];

/** Content id meaning "bytes that match no write" (torn inside a unit, misplaced, corrupt). */
export const GARBAGE = -1;

function word(id: number, unit: number, i: number): number {
  let x = (Math.imul(id, 0x9e3779b1) ^ Math.imul(unit + 1, 0x85ebca6b) ^ Math.imul(i, 0xc2b2ae35)) >>> 0;
  x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d);
  return (x ^ (x >>> 13)) >>> 0;
}

/** Bytes for units firstUnit.. of a write by operation `id`. */
export function makeData(id: number, firstUnit: number, units: number): Uint8Array {
  const out = new Uint8Array(units * UNIT_BYTES);
  const words = new Uint32Array(out.buffer);
  for (let u = 0; u < units; u++) {
    const base = u * WORDS;
    const unit = firstUnit + u;
    words[base] = id;
    words[base + 1] = unit;
    for (let i = 2; i < WORDS; i++) words[base + i] = word(id, unit, i);
  }
  return out;
}

/**
 * The content id of each unit of `bytes` (which starts at unit `firstUnit` and must be 4-byte
 * aligned in its buffer): the writing operation's id, 0 for zeros, GARBAGE otherwise.
 */
export function decodeUnits(bytes: Uint8Array, firstUnit: number): Int32Array {
  const units = bytes.length / UNIT_BYTES;
  const out = new Int32Array(units);
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, units * WORDS);
  for (let u = 0; u < units; u++) {
    const base = u * WORDS;
    const id = words[base]!;
    const unit = firstUnit + u;
    let ok: boolean;
    if (id === 0) {
      ok = words[base + 1] === 0;
      for (const i of SAMPLED) ok &&= words[base + i] === 0;
    } else {
      ok = id <= 0x7fffffff && words[base + 1] === unit;
      for (const i of SAMPLED) ok &&= words[base + i] === word(id, unit, i);
    }
    out[u] = ok ? id : GARBAGE;
  }
  return out;
}
