// Human sizes: "64KiB", "1GiB", "512M", "4096". Binary (IEC) multiples; SI suffixes are refused
// rather than guessed, because 1GB vs 1GiB on a block device is a real difference.
import { invalidArgument } from '../core/errors.js';
import { formatBinarySize } from '../core/lib/binary-size.js';

const UNITS: Record<string, number> = {
  '': 1, B: 1,
  K: 2 ** 10, KI: 2 ** 10, KIB: 2 ** 10,
  M: 2 ** 20, MI: 2 ** 20, MIB: 2 ** 20,
  G: 2 ** 30, GI: 2 ** 30, GIB: 2 ** 30,
  T: 2 ** 40, TI: 2 ** 40, TIB: 2 ** 40,
};

export function parseSize(text: string): number {
  const match = /^\s*(\d+)\s*([A-Za-z]*)\s*$/.exec(text);
  const unit = match ? UNITS[match[2]!.toUpperCase()] : undefined;
  if (!match || unit === undefined) {
    throw invalidArgument(`invalid size ${JSON.stringify(text)}: use bytes or a binary unit, e.g. 4096, 64KiB, 512MiB, 1GiB`);
  }
  const value = Number(match[1]) * unit;
  if (!Number.isSafeInteger(value)) throw invalidArgument(`size ${text} is too large`);
  return value;
}

export const formatSize = formatBinarySize;
