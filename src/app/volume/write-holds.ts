// What one participant keeps for a write from one step of its plan to a later one (an async pair's
// cycle token, from begin-capture to capture), carried on the write itself (AppliedWrite.holds): a
// table keyed by write objects cost a lookup, an insert and a delete per write, and an identity
// hash for every write. Each participant reads and removes only its own (`owner`); a write has a
// few at most (one per async pair of its volume).
import type { AppliedWrite } from './volume.js';

export interface WriteHold {
  readonly owner: object;
  next: WriteHold | undefined;
}

export function findHold<H extends WriteHold>(write: AppliedWrite, owner: object): H | undefined {
  for (let h = write.holds; h !== undefined; h = h.next) if (h.owner === owner) return h as H;
  return undefined;
}

export function addHold(write: AppliedWrite, hold: WriteHold): void {
  hold.next = write.holds;
  write.holds = hold;
}

export function dropHold(write: AppliedWrite, hold: WriteHold): void {
  if (write.holds === hold) {
    write.holds = hold.next;
    return;
  }
  for (let h = write.holds; h !== undefined; h = h.next) {
    if (h.next === hold) {
      h.next = hold.next;
      return;
    }
  }
}
