// base:allocation descriptors from a volume's allocation map.
import { STATE_HOLE, STATE_ZERO } from './constants.js';
import type { StatusExtent } from './replies.js';

/** Longest single descriptor: a u32 length, kept 4 KiB-aligned. */
const MAX_DESCRIPTOR_BYTES = 0xffff_f000;
/** Bound on descriptors per reply; clients re-query from the first uncovered offset. */
export const MAX_DESCRIPTORS = 1024;

export interface AllocationRun {
  readonly offset: number;
  readonly length: number;
  readonly kind: 'hole' | 'data';
}

export function statusExtents(runs: readonly AllocationRun[], reqOne: boolean, requestLength: number): StatusExtent[] {
  const out: StatusExtent[] = [];
  for (const run of runs) {
    if (run.length <= 0) continue;
    const status = run.kind === 'hole' ? STATE_HOLE | STATE_ZERO : 0;
    let left = run.length;
    const last = out[out.length - 1];
    if (last && last.status === status && last.length + left <= MAX_DESCRIPTOR_BYTES) {
      out[out.length - 1] = { length: last.length + left, status };
      continue;
    }
    while (left > 0) {
      const length = Math.min(left, MAX_DESCRIPTOR_BYTES);
      out.push({ length, status });
      left -= length;
    }
    if (out.length >= MAX_DESCRIPTORS) break;
  }
  // A successful reply must describe at least one byte; "data" is always a safe answer.
  if (out.length === 0) return [{ length: Math.min(requestLength, MAX_DESCRIPTOR_BYTES), status: 0 }];
  if (reqOne) return [{ length: Math.min(out[0]!.length, requestLength), status: out[0]!.status }];
  return out.slice(0, MAX_DESCRIPTORS);
}
