// The values a journal session (SPEC §6, seed 004) passes between its arrays: write tokens with
// their global sequence numbers, and the messages that carry tokens and data. Pure types: the
// sequencer, the primary position and the secondary queue (this folder) produce and consume them,
// the simulator carries them over a simulated network and the app over the link.

/** What a primary knows of a write before it has a sequence number: one piece per secondary. */
export interface TokenSpec {
  /** The journal pair the piece belongs to (one pair per volume, extents and secondary). */
  readonly pair: string;
  /** The primary volume's name (the loss report names it). */
  readonly volume: string;
  readonly offset: number;
  readonly length: number;
  /** The secondary array the piece goes to. */
  readonly secondary: string;
}

/** A write token: the piece plus its global sequence number and the sequencer's time. */
export interface Token extends TokenSpec {
  readonly sequence: number;
  /** When the sequencer assigned the number (its clock, ms). */
  readonly timeMs: number;
}

/** A token with the written bytes (the data mover's entry); null: the piece was zeroed or trimmed. */
export interface DataEntry {
  readonly token: Token;
  readonly data: Uint8Array | null;
}

/** Bytes an entry carries on the link (a zeroed piece travels as a marker). */
export const entryBytes = (data: Uint8Array | null): number => (data === null ? 0 : data.length);

/** SPEC §6 message types (this version sends data and ack; the others are reserved for initial copy and teardown). */
export const JOURNAL_MESSAGE_TYPES = ['data', 'establish', 'terminate', 'initial-copy', 'ack', 'exception'] as const;
export type JournalMessageType = (typeof JOURNAL_MESSAGE_TYPES)[number];

export type StreamRole = 'sequencer' | 'primary';

/**
 * The receiver's key for a stream (continuity numbers are per sender, role and — for a primary
 * that restarted and resends from its log — the sender's incarnation: a new process starts a new
 * stream at continuity 1, and entries it sends again are dropped by sequence number).
 */
export const streamKey = (m: { readonly from: string; readonly role: StreamRole; readonly incarnation?: number | undefined }): string =>
  `${m.role}:${m.from}${m.incarnation === undefined ? '' : `@${m.incarnation}`}`;

/**
 * One message on a sender → receiver stream. `continuity` numbers the stream's messages 1, 2, 3…
 * (ack messages carry 0: they are not part of the stream); a receiver takes message n only after
 * n − 1, so a resumed stream has neither gaps nor duplicates.
 */
export interface JournalMessage {
  readonly journal: string;
  /** The sending array. */
  readonly from: string;
  /**
   * Which stream of that array: its sequencer's token fan-out or its primary position's tokens and
   * data (one array may run both). An ack names the role of the stream it acknowledges.
   */
  readonly role: StreamRole;
  readonly type: JournalMessageType;
  readonly continuity: number;
  /** The sending process's incarnation (primaries; part of the stream's key). An ack echoes it. */
  readonly incarnation?: number;
  /** Tokens since the previous message (possibly of pieces whose data follows later). */
  readonly tokens: readonly Token[];
  readonly entries: readonly DataEntry[];
  /** ack: every message up to this continuity is durable at the receiver. */
  readonly ackUpTo?: number;
  /** exception: why (a sender that lost data it had tokens for). */
  readonly reason?: string;
}

export function messageBytes(m: JournalMessage): number {
  let n = 32 + m.tokens.length * 48;
  for (const e of m.entries) n += 48 + entryBytes(e.data);
  return n;
}

/** Whether a piece at offset/length of a volume lies inside one pair's extents (undefined: the whole volume). */
export interface Extent {
  readonly offset: number;
  readonly length: number;
}

/**
 * Splits one write into pieces, one per pair whose extents it touches (a write spanning extents
 * that go to two secondaries becomes two pieces, each with its own sequence number).
 */
export function splitWrite(
  pairs: readonly { readonly id: string; readonly volume: string; readonly secondary: string; readonly extents: readonly Extent[] | undefined }[],
  volume: string, offset: number, length: number,
): TokenSpec[] {
  const out: TokenSpec[] = [];
  for (const p of pairs) {
    if (p.volume !== volume) continue;
    if (p.extents === undefined) { out.push({ pair: p.id, volume, offset, length, secondary: p.secondary }); continue; }
    for (const e of p.extents) {
      const start = Math.max(offset, e.offset);
      const end = Math.min(offset + length, e.offset + e.length);
      if (start < end) out.push({ pair: p.id, volume, offset: start, length: end - start, secondary: p.secondary });
    }
  }
  return out;
}
