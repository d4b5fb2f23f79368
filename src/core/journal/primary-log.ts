// The primary-side journal log: what a primary array must keep so that a restart (kill -9) neither
// leaves a number without data (every secondary would wait for it forever) nor loses a captured
// entry it had not sent. The primary machine (journal-primary.ts) emits the records; the app
// appends them to a file (the simulator to its "disk") before anything that follows them runs:
//
// - `request`: the pieces a request asks numbers for, with the host's bytes (known at admission),
//   appended before the request leaves — so a grant the old process never saw can be asked for
//   again (same incarnation and request id: the sequencer repeats its last grant) and its pieces
//   still get their data;
// - `grant`: the numbers a request got, appended before any of its writes may proceed.
//
// Host writes complete only after both (a write's number is granted before its local write), so
// every acknowledged write is in the log, and so is every number the sequencer handed out to this
// array, except the last request's if the process died before its grant arrived (then `pending`).
// Pure: reading the log back is this function.
import type { DataEntry, Token, TokenSpec } from './journal-types.js';

export interface LoggedPiece {
  readonly spec: TokenSpec;
  /** The host's bytes for the piece (null: zeroed or trimmed). */
  readonly data: Uint8Array | null;
}

export type PrimaryLogRecord =
  | { readonly kind: 'request'; readonly incarnation: number; readonly requestId: number; readonly pieces: readonly LoggedPiece[] }
  | { readonly kind: 'grant'; readonly incarnation: number; readonly requestId: number; readonly first: number; readonly timeMs: number };

/**
 * The sequencer's log (same files and frames, its own segments): one record per grant, appended
 * before the grant leaves — the requester's identity (a repeated request gets the same grant after
 * a restart too) and the pieces, whose tokens a restarted sequencer fans out again.
 */
export interface IssuedRecord {
  readonly kind: 'issued';
  readonly from: string;
  readonly incarnation: number;
  readonly requestId: number;
  readonly first: number;
  readonly timeMs: number;
  readonly specs: readonly TokenSpec[];
}

/** The process stopped cleanly and made the log durable: after a reboot it is whole. Last if present. */
export interface ClosedRecord {
  readonly kind: 'closed';
}

export type JournalLogRecord = PrimaryLogRecord | IssuedRecord | ClosedRecord;

export interface ReplayedLog {
  /** Entries of granted requests, in sequence order (to send again: a secondary drops what it has). */
  readonly entries: readonly DataEntry[];
  /** The last request if no grant for it was logged: it is asked for again with its old identity. */
  readonly pending: { readonly incarnation: number; readonly requestId: number; readonly pieces: readonly LoggedPiece[] } | undefined;
  /** Every logged piece in log order (granted, then pending): the local writes to redo. */
  readonly redo: readonly LoggedPiece[];
  /** The highest request id logged per incarnation (a new process numbers its requests above). */
  readonly highestRequestId: number;
}

const key = (incarnation: number, requestId: number): string => `${incarnation}/${requestId}`;

export function replayPrimaryLog(records: readonly JournalLogRecord[]): ReplayedLog {
  const requests = new Map<string, Extract<PrimaryLogRecord, { kind: 'request' }>>();
  const granted = new Set<string>();
  const entries: DataEntry[] = [];
  const redo: LoggedPiece[] = [];
  let highestRequestId = 0;
  let last: Extract<PrimaryLogRecord, { kind: 'request' }> | undefined;
  for (const r of records) {
    if (r.kind !== 'request' && r.kind !== 'grant') continue;
    highestRequestId = Math.max(highestRequestId, r.requestId);
    if (r.kind === 'request') {
      requests.set(key(r.incarnation, r.requestId), r);
      last = r;
      continue;
    }
    const k = key(r.incarnation, r.requestId);
    const req = requests.get(k);
    // A grant whose request was trimmed away (or logged twice) has nothing left to send.
    if (!req || granted.has(k)) continue;
    granted.add(k);
    req.pieces.forEach((p, i) => {
      const token: Token = { ...p.spec, sequence: r.first + i, timeMs: r.timeMs };
      entries.push({ token, data: p.data });
      redo.push(p);
    });
  }
  const pending = last && !granted.has(key(last.incarnation, last.requestId))
    ? { incarnation: last.incarnation, requestId: last.requestId, pieces: last.pieces }
    : undefined;
  if (pending) redo.push(...pending.pieces);
  entries.sort((a, b) => a.token.sequence - b.token.sequence);
  return { entries, pending, redo, highestRequestId };
}
