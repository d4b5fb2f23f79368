// A simulated SpillStore: files as sparse byte maps in memory, each operation completing after a
// seeded latency, so operations on one file complete out of order (as the port allows: the caller
// orders them). Spill is scratch space: a crash simply loses it (crash() drops every completion).
import type { Prng } from '../core/lib/prng.js';
import type { SpillPiece, SpillStore } from '../ports/spill-store.js';
import { FAST_DEVICE, drawLatency } from './latency.js';
import type { Scheduler } from './scheduler.js';

const PAGE = 4096;

export class SimSpillStore implements SpillStore {
  /** (pair/cycle) → page index → 4 KiB page (pages never written read as zeros: a sparse file). */
  private readonly files = new Map<string, Map<number, Uint8Array>>();
  private epoch = 0;
  /** Operations performed, for tests that want to see the spill used. */
  writes = 0;
  reads = 0;

  constructor(private readonly scheduler: Scheduler, private readonly prng: Prng) {}

  private later<T>(work: () => T): Promise<T> {
    const epoch = this.epoch;
    return new Promise<T>((resolve, reject) => {
      this.scheduler.at(drawLatency(this.prng, FAST_DEVICE), () => {
        if (epoch !== this.epoch) return;
        try {
          resolve(work());
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      });
    });
  }

  /** Files holding data now (for tests). */
  fileCount(): number {
    return this.files.size;
  }

  write(pair: string, cycle: number, pieces: readonly SpillPiece[]): Promise<void> {
    const copies = pieces.map((p) => ({ offset: p.offset, data: p.data.slice() }));
    return this.later(() => {
      this.writes++;
      const key = `${pair}/${cycle}`;
      let file = this.files.get(key);
      if (!file) this.files.set(key, file = new Map());
      for (const { offset: at, data: b } of copies) {
        for (let i = 0; i < b.length;) {
          const page = Math.floor((at + i) / PAGE);
          const start = (at + i) % PAGE;
          const n = Math.min(PAGE - start, b.length - i);
          let bytes = file.get(page);
          if (!bytes) file.set(page, bytes = new Uint8Array(PAGE));
          bytes.set(b.subarray(i, i + n), start);
          i += n;
        }
      }
    });
  }

  read(pair: string, cycle: number, offset: number, length: number): Promise<Uint8Array> {
    return this.later(() => {
      this.reads++;
      const out = new Uint8Array(length);
      const file = this.files.get(`${pair}/${cycle}`);
      for (let i = 0; file && i < length;) {
        const page = Math.floor((offset + i) / PAGE);
        const start = (offset + i) % PAGE;
        const n = Math.min(PAGE - start, length - i);
        const bytes = file.get(page);
        if (bytes) out.set(bytes.subarray(start, start + n), i);
        i += n;
      }
      return out;
    });
  }

  removeCycle(pair: string, cycle: number): Promise<void> {
    return this.later(() => { this.files.delete(`${pair}/${cycle}`); });
  }

  close(): Promise<void> {
    this.files.clear();
    return Promise.resolve();
  }

  /** The process died: operations in flight never complete and nothing stored survives. */
  crash(): void {
    this.epoch++;
    this.files.clear();
  }
}
