// The durable side of a secondary's pending-write queue (core/journal/journal-secondary.ts), kept
// through the MetaStore port (checksummed records, tmp + fsync + rename): one record per message
// taken — its tokens, the data of this array's entries, and the sender's continuity — and one
// record of how far the queue is applied. A message record goes once everything it holds is
// applied; the applied record carries each stream's next continuity (of the messages whose records
// were complete when it was written), so a restart resumes every stream where it was.
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import { emptyDurable, type SecondaryDurable } from '../../core/journal/journal-secondary.js';
import type { DataEntry, Token } from '../../core/journal/journal-types.js';
import type { MetaStore } from '../../ports/meta-store.js';

const prefix = (journal: string): string => `journal-q/${journal}/`;
const appliedKey = (journal: string): string => `${prefix(journal)}applied`;
const messageKey = (journal: string, stream: string, expected: number): string =>
  `${prefix(journal)}m/${stream}/${String(expected - 1).padStart(15, '0')}`;

interface MessageHeader {
  readonly stream: string;
  readonly expected: number;
  readonly tokens: readonly Token[];
  readonly fromPrimary: readonly number[];
  /** Entries in data order: sequence and bytes (-1: zeroed). */
  readonly entries: ReadonlyArray<{ readonly sequence: number; readonly bytes: number }>;
  readonly lastMessageMs: number | null;
}

interface AppliedRecord {
  readonly appliedUpTo: number;
  readonly appliedTimeMs: number | null;
  readonly recoveredAt: number | null;
  /** Next continuity per stream, as far as message records were complete. */
  readonly expected?: Readonly<Record<string, number>>;
}

const encoder = new TextEncoder();

function encodeMessage(h: MessageHeader, entries: readonly DataEntry[]): Uint8Array {
  const head = encoder.encode(JSON.stringify(h));
  let total = 4 + head.length;
  for (const e of entries) total += e.data?.length ?? 0;
  const out = new Uint8Array(total);
  new DataView(out.buffer).setUint32(0, head.length);
  out.set(head, 4);
  let at = 4 + head.length;
  for (const e of entries) if (e.data) { out.set(e.data, at); at += e.data.length; }
  return out;
}

function decodeMessage(bytes: Uint8Array, key: string): { header: MessageHeader; data: Map<number, Uint8Array | null> } {
  const corrupt = (why: string): TidemarkError => new TidemarkError(ErrorCode.MetadataCorrupt, `journal queue record ${key}: ${why}`, { key });
  if (bytes.length < 4) throw corrupt('too short');
  const headLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0);
  if (4 + headLength > bytes.length) throw corrupt('header runs past the end');
  const header = decodeJson(bytes.subarray(4, 4 + headLength), key) as MessageHeader;
  if (!Array.isArray(header.tokens) || !Array.isArray(header.entries) || typeof header.expected !== 'number') throw corrupt('bad header');
  const data = new Map<number, Uint8Array | null>();
  let at = 4 + headLength;
  for (const e of header.entries) {
    if (e.bytes < 0) { data.set(e.sequence, null); continue; }
    if (at + e.bytes > bytes.length) throw corrupt('data runs past the end');
    data.set(e.sequence, bytes.slice(at, at + e.bytes));
    at += e.bytes;
  }
  return { header, data };
}

export class JournalQueueStore {
  /** Per message record: the highest sequence it holds, and its stream (for pruning). */
  private readonly records = new Map<string, { high: number; stream: string; expected: number }>();
  /** Next continuity per stream over the message records written completely, without holes. */
  private readonly streamExpected = new Map<string, number>();
  /** Records complete beyond a hole (written in parallel, one before an earlier one). */
  private readonly ahead = new Map<string, Set<number>>();

  private noteExpected(stream: string, expected: number): void {
    let next = this.streamExpected.get(stream) ?? 1;
    if (expected <= next) return;
    const ahead = this.ahead.get(stream) ?? new Set<number>();
    ahead.add(expected);
    while (ahead.delete(next + 1)) next++;
    this.streamExpected.set(stream, next);
    if (ahead.size > 0) this.ahead.set(stream, ahead); else this.ahead.delete(stream);
  }

  constructor(private readonly meta: MetaStore, private readonly journal: string) {}

  /** Reads the queue back after a restart (or an empty one). */
  async load(): Promise<SecondaryDurable> {
    const d = emptyDurable();
    const appliedBytes = await this.meta.read(appliedKey(this.journal));
    if (appliedBytes) {
      const a = decodeJson(appliedBytes, appliedKey(this.journal)) as AppliedRecord;
      d.appliedUpTo = a.appliedUpTo;
      d.appliedTimeMs = a.appliedTimeMs;
      d.recoveredAt = a.recoveredAt;
      for (const [stream, next] of Object.entries(a.expected ?? {})) {
        d.expected.set(stream, next);
        this.streamExpected.set(stream, next);
      }
    }
    // Records are written in parallel, so a crash may leave message n + 1 without n (whose
    // acknowledgement therefore never left): a stream is taken back only up to its first hole, and
    // what lies beyond is dropped (its sender still has it and sends it again).
    const loaded: Array<{ key: string; header: MessageHeader; data: Map<number, Uint8Array | null> }> = [];
    for (const key of await this.meta.list(`${prefix(this.journal)}m/`)) {
      const bytes = await this.meta.read(key);
      if (bytes) loaded.push({ key, ...decodeMessage(bytes, key) });
    }
    loaded.sort((x, y) => x.header.expected - y.header.expected);
    for (const { key, header, data } of loaded) {
      const next = d.expected.get(header.stream) ?? 1;
      if (header.expected > next + 1) {
        await this.meta.delete(key);
        continue;
      }
      if (header.expected === next + 1) d.expected.set(header.stream, header.expected);
      this.noteExpected(header.stream, d.expected.get(header.stream)!);
      let high = 0;
      for (const t of header.tokens) {
        high = Math.max(high, t.sequence);
        if (t.sequence > d.appliedUpTo && !d.tokens.has(t.sequence)) d.tokens.set(t.sequence, t);
      }
      for (const q of header.fromPrimary) if (q > d.appliedUpTo) d.fromPrimary.add(q);
      for (const [q, bytesOf] of data) if (q > d.appliedUpTo) d.data.set(q, bytesOf);
      if (header.lastMessageMs !== null && (d.lastMessageMs === null || header.lastMessageMs > d.lastMessageMs)) d.lastMessageMs = header.lastMessageMs;
      this.records.set(key, { high, stream: header.stream, expected: header.expected });
    }
    return d;
  }

  /** One message's contribution, durable when this resolves. */
  async persist(a: { stream: string; expected: number; tokens: readonly Token[]; fromPrimary: readonly number[]; entries: readonly DataEntry[]; lastMessageMs: number | null }): Promise<void> {
    const key = messageKey(this.journal, a.stream, a.expected);
    const header: MessageHeader = {
      stream: a.stream, expected: a.expected, tokens: a.tokens, fromPrimary: a.fromPrimary, lastMessageMs: a.lastMessageMs,
      entries: a.entries.map((e) => ({ sequence: e.token.sequence, bytes: e.data === null ? -1 : e.data.length })),
    };
    let high = 0;
    for (const t of a.tokens) high = Math.max(high, t.sequence);
    for (const e of a.entries) high = Math.max(high, e.token.sequence);
    await this.meta.write(key, encodeMessage(header, a.entries));
    this.records.set(key, { high, stream: a.stream, expected: a.expected });
    this.noteExpected(a.stream, a.expected);
  }

  /** The queue is applied up to `upTo`: recorded first, then what it made useless is deleted. */
  async applied(upTo: number, timeMs: number | null, recoveredAt: number | null): Promise<void> {
    const expected = Object.fromEntries(this.streamExpected);
    await this.meta.write(appliedKey(this.journal), encodeJson({ appliedUpTo: upTo, appliedTimeMs: timeMs, recoveredAt, expected } satisfies AppliedRecord));
    // Only records whose continuity the applied record just written covers may go.
    for (const [key, r] of [...this.records]) {
      if (r.high > upTo || r.expected > (expected[r.stream] ?? 1)) continue;
      this.records.delete(key);
      await this.meta.delete(key);
    }
  }

  async remove(): Promise<void> {
    for (const key of await this.meta.list(prefix(this.journal))) await this.meta.delete(key);
    this.records.clear();
  }
}
