// Ports for one incarnation of a simulated process. After a crash the old incarnation is dead: a
// call it still makes (from a continuation already queued when the power went) has no effect and
// never completes, as a process that no longer exists can issue no I/O.
import type { BlockStore } from '../ports/block-store.js';
import type { MetaStore, SlotJournal } from '../ports/meta-store.js';

export interface Ports {
  readonly store: BlockStore;
  readonly meta: MetaStore;
  readonly journal: SlotJournal;
}

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

export function fenced(ports: Ports, alive: () => boolean): Ports {
  const gate = <T>(call: () => Promise<T>): Promise<T> => (alive() ? call() : never<T>());
  const s = ports.store;
  const store: BlockStore = {
    get sizeBytes() { return s.sizeBytes; },
    get canPunchHoles() { return s.canPunchHoles; },
    readInto: (o, l, t, to) => gate(() => s.readInto(o, l, t, to)),
    write: (o, d) => gate(() => s.write(o, d)),
    writeZeroes: (o, l, a) => gate(() => s.writeZeroes(o, l, a)),
    trim: (o, l) => gate(() => s.trim(o, l)),
    flush: () => gate(() => s.flush()),
    allocation: (o, l) => gate(() => s.allocation(o, l)),
    close: () => gate(() => s.close()),
  };
  const m = ports.meta;
  const meta: MetaStore = {
    read: (k) => gate(() => m.read(k)),
    write: (k, d) => gate(() => m.write(k, d)),
    delete: (k) => gate(() => m.delete(k)),
    list: (p) => gate(() => m.list(p)),
  };
  const j = ports.journal;
  const journal: SlotJournal = {
    get slotCount() { return j.slotCount; },
    get slotBytes() { return j.slotBytes; },
    writeSlot: (i, d) => gate(() => j.writeSlot(i, d)),
    writeSlots: (w) => gate(() => j.writeSlots(w)),
    readAll: () => gate(() => j.readAll()),
    close: () => gate(() => j.close()),
  };
  return { store, meta, journal };
}
