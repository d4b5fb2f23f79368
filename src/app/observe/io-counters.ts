// Running totals of host I/O per volume, fed by every completed NBD operation, so the history can
// turn them into IOPS and throughput per sample interval (the dashboard's sparklines). Totals, not
// rates: a sampler reading them at its own pace loses nothing between reads.
import type { OpKind } from '../volume/volume.js';

export interface IoTotals {
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
}

export const zeroTotals = (): IoTotals => ({ readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0 });

export class IoCounters {
  private readonly byVolume = new Map<string, IoTotals>();

  readonly onOp = (volume: string, kind: OpKind, bytes: number): void => {
    let totals = this.byVolume.get(volume);
    if (!totals) this.byVolume.set(volume, totals = zeroTotals());
    // Zeroes and trims change data like writes do; a flush moves no data and is no IOPS of note.
    if (kind === 'read') {
      totals.readOps++;
      totals.readBytes += bytes;
    } else if (kind !== 'flush') {
      totals.writeOps++;
      totals.writeBytes += bytes;
    }
  };

  totals(volume: string): IoTotals {
    return { ...(this.byVolume.get(volume) ?? zeroTotals()) };
  }

  forget(volume: string): void {
    this.byVolume.delete(volume);
  }
}
