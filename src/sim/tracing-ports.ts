// Wraps a volume's ports so every call and completion is written to a trace (for `--trace`).
import { decodeSlot } from '../core/bitmap/activity-log.js';
import { decodeDelta } from '../core/bitmap/bitmap-deltas.js';
import type { BlockStore } from '../ports/block-store.js';
import type { MetaStore, SlotJournal } from '../ports/meta-store.js';
import type { Ports } from './fenced-ports.js';

export function traced(ports: Ports, log: (line: string) => void): Ports {
  const step = <T>(what: string, p: Promise<T>): Promise<T> => {
    log(`  > ${what}`);
    return p.then((v) => {
      log(`  < ${what}`);
      return v;
    });
  };
  const s = ports.store;
  const store: BlockStore = {
    get sizeBytes() { return s.sizeBytes; },
    get canPunchHoles() { return s.canPunchHoles; },
    readInto: (o, l, t, to) => step(`disk read ${o}+${l}`, s.readInto(o, l, t, to)),
    write: (o, d) => step(`disk write ${o}+${d.length}`, s.write(o, d)),
    writeZeroes: (o, l, a) => step(`disk zeroes ${o}+${l}`, s.writeZeroes(o, l, a)),
    trim: (o, l) => step(`disk trim ${o}+${l}`, s.trim(o, l)),
    flush: () => step('disk flush', s.flush()),
    allocation: (o, l) => step(`disk allocation ${o}+${l}`, s.allocation(o, l)),
    close: () => step('disk close', s.close()),
  };
  const m = ports.meta;
  const meta: MetaStore = {
    read: (k) => step(`meta read ${k}`, m.read(k)),
    write: (k, d) => step(`meta write ${k} (${d.length} bytes)`, m.write(k, d)),
    delete: (k) => step(`meta delete ${k}`, m.delete(k)),
    list: (p) => step(`meta list ${p}`, m.list(p)),
  };
  const j = ports.journal;
  const journal: SlotJournal = {
    get slotCount() { return j.slotCount; },
    get slotBytes() { return j.slotBytes; },
    writeSlot: (i, d) => step(describeSlot(i, d), j.writeSlot(i, d)),
    writeSlots: (w) => step(w.map((x) => describeSlot(x.index, x.data)).join(' + '), j.writeSlots(w)),
    readAll: () => step('journal read', j.readAll()),
    close: () => step('journal close', j.close()),
  };
  return { store, meta, journal };
}

function describeSlot(index: number, slot: Uint8Array): string {
  const delta = decodeDelta(slot, Number.MAX_SAFE_INTEGER);
  if (delta) {
    const positions = delta.positions.map((p) => `${p.id} ${p.runs.map((r) => `${r.start}-${r.end - 1}`).join(',')}`);
    return `journal slot ${index} delta generation ${delta.generation} seq ${delta.seq} [${positions.join('; ')}]`;
  }
  const txn = decodeSlot(slot);
  if (!txn) return `journal slot ${index} (${slot.length} bytes, not a transaction or delta)`;
  const named = txn.delta ? ` with delta ${txn.delta.generation}/${txn.delta.seq}` : '';
  return `journal slot ${index} seq ${txn.seq} extents [${txn.extents.join(',')}]${named}`;
}
