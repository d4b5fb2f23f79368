// What an array keeps durably about journals: each journal's definition (on its sequencer, on every
// primary array with pairs in it, on every secondary array), each journal pair half, and on the
// sequencer the next number it hands out and the secondaries it fans tokens out to.
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Type, type Static } from '@sinclair/typebox';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import { JournalPairWire, JournalRecordWire } from '../../core/journal/journal-wire.js';
import type { MetaStore } from '../../ports/meta-store.js';

export type JournalRecord = Static<typeof JournalRecordWire>;
export type JournalPairRecord = Static<typeof JournalPairWire> & { readonly journal: string; readonly role: 'primary' | 'secondary'; readonly createdAtMs: number };

const PairRecordSchema = Type.Intersect([JournalPairWire, Type.Object({
  journal: Type.String(), role: Type.Union([Type.Literal('primary'), Type.Literal('secondary')]), createdAtMs: Type.Integer({ minimum: 0 }),
})]);
const SequencerRecordSchema = Type.Object({
  next: Type.Integer({ minimum: 1 }),
  secondaries: Type.Array(Type.String()),
  /** The machine's boot when written: after a reboot the sequencer's log (not fsynced) may have lost its tail. */
  bootId: Type.Optional(Type.String()),
});
export type SequencerRecord = Static<typeof SequencerRecordSchema>;

const checkJournal = TypeCompiler.Compile(JournalRecordWire);
const checkPair = TypeCompiler.Compile(PairRecordSchema);
const checkSequencer = TypeCompiler.Compile(SequencerRecordSchema);

export const journalKey = (name: string): string => `journal/${name}`;
export const journalPairKey = (id: string): string => `journal-pair/${id}`;
export const sequencerKey = (name: string): string => `journal-seq/${name}`;
/** On a secondary: every secondary of the journal, as the sequencer last told it. */
export const membersKey = (name: string): string => `journal-members/${name}`;

function parsed<T>(check: { Check(v: unknown): boolean }, bytes: Uint8Array, key: string): T {
  const value = decodeJson(bytes, key);
  if (!check.Check(value)) throw new TidemarkError(ErrorCode.MetadataCorrupt, `journal record ${key} does not have the expected shape`, { key });
  return value as T;
}

export class JournalRecords {
  constructor(private readonly meta: MetaStore) {}

  async loadJournals(): Promise<JournalRecord[]> {
    const out: JournalRecord[] = [];
    for (const key of await this.meta.list('journal/')) {
      const bytes = await this.meta.read(key);
      if (bytes) out.push(parsed<JournalRecord>(checkJournal, bytes, key));
    }
    return out;
  }

  async loadPairs(): Promise<JournalPairRecord[]> {
    const out: JournalPairRecord[] = [];
    for (const key of await this.meta.list('journal-pair/')) {
      const bytes = await this.meta.read(key);
      if (bytes) out.push(parsed<JournalPairRecord>(checkPair, bytes, key));
    }
    return out;
  }

  async loadSequencer(name: string): Promise<SequencerRecord | undefined> {
    const bytes = await this.meta.read(sequencerKey(name));
    return bytes ? parsed<SequencerRecord>(checkSequencer, bytes, sequencerKey(name)) : undefined;
  }

  async loadMembers(name: string): Promise<string[]> {
    const bytes = await this.meta.read(membersKey(name));
    if (!bytes) return [];
    const v = decodeJson(bytes, membersKey(name));
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new TidemarkError(ErrorCode.MetadataCorrupt, `journal members ${name} are not a list of names`);
    return v as string[];
  }

  saveJournal(r: JournalRecord): Promise<void> { return this.meta.write(journalKey(r.name), encodeJson(r)); }
  savePair(r: JournalPairRecord): Promise<void> { return this.meta.write(journalPairKey(r.id), encodeJson(r)); }
  saveSequencer(name: string, r: SequencerRecord): Promise<void> { return this.meta.write(sequencerKey(name), encodeJson(r)); }
  saveMembers(name: string, members: readonly string[]): Promise<void> { return this.meta.write(membersKey(name), encodeJson(members)); }

  async removeJournal(name: string, pairIds: readonly string[]): Promise<void> {
    for (const id of pairIds) await this.meta.delete(journalPairKey(id));
    await this.meta.delete(sequencerKey(name));
    await this.meta.delete(membersKey(name));
    await this.meta.delete(journalKey(name));
  }
}
