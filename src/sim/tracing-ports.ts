// Wraps a volume's ports so every call and completion is written to a trace (for `--trace`).
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
    writeSlot: (i, d) => step(`journal slot ${i} seq ${new DataView(d.buffer, d.byteOffset).getFloat64(8)} ` +
      `extents [${extentsOf(d).join(',')}]`, j.writeSlot(i, d)),
    readAll: () => step('journal read', j.readAll()),
    close: () => step('journal close', j.close()),
  };
  return { store, meta, journal };
}

function extentsOf(slot: Uint8Array): number[] {
  const view = new DataView(slot.buffer, slot.byteOffset, slot.byteLength);
  const count = view.getUint32(16);
  const out: number[] = [];
  for (let i = 0; i < count && 24 + i * 4 + 4 <= slot.length; i++) out.push(view.getUint32(24 + i * 4));
  return out;
}
