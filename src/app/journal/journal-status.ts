// What `journal show` reports of one journal on one array: its definition, the roles this array
// plays, how far the sequence got (issued, sent, received, applied), the lag and queue sizes.
import type { JournalRuntime } from './journal-runtime.js';

export interface JournalPairView {
  readonly id: string;
  readonly role: 'primary' | 'secondary';
  readonly primaryArray: string;
  readonly primaryVolume: string;
  readonly secondaryArray: string;
  readonly secondaryVolume: string;
  readonly extents: Array<{ offset: number; length: number }> | null;
}

export interface JournalStatus {
  readonly name: string;
  readonly sequencer: string;
  readonly intervalMs: number;
  readonly batchBytes: number;
  readonly tokens: 'ahead' | 'sync';
  readonly createdAt: string;
  readonly roles: Array<'sequencer' | 'primary' | 'secondary'>;
  /** Highest numbers: handed out (sequencer), taken by this array's writes and sent with data (primary), known, complete and applied (secondary). */
  readonly sequence: {
    readonly issued: number | null; readonly taken: number | null; readonly sent: number | null;
    readonly received: number | null; readonly complete: number | null; readonly applied: number | null;
  };
  /** Secondary: numbers known but not applied, bytes of data queued, and the age of the newest applied write. */
  readonly lag: { readonly entries: number; readonly bytes: number; readonly seconds: number | null } | null;
  /** Primary: writes waiting for numbers, captured bytes not yet sent, messages not yet acknowledged. */
  readonly outgoing: { readonly waitingWrites: number; readonly bufferedBytes: number; readonly unackedMessages: number; readonly sentMessages: number; readonly sentDataBytes: number } | null;
  readonly members: string[];
  /** Secondary: the first number this queue lacks, and what is missing (the token, or the data of a pair). */
  readonly blocked: { readonly sequence: number; readonly missing: string } | null;
  readonly recovered: boolean;
  readonly pairs: JournalPairView[];
}

export function journalStatus(rt: JournalRuntime, self: string, nowMs: number): JournalStatus {
  const r = rt.record;
  const roles: JournalStatus['roles'] = [];
  if (r.sequencer === self) roles.push('sequencer');
  const pairs = [...rt.pairs.values()].sort((a, b) => a.id.localeCompare(b.id));
  if (pairs.some((p) => p.role === 'primary')) roles.push('primary');
  if (rt.secondary) roles.push('secondary');
  const s = rt.secondary;
  const p = rt.primary;
  const appliedTime = s?.durable.appliedTimeMs ?? null;
  return {
    name: r.name, sequencer: r.sequencer, intervalMs: r.intervalMs, batchBytes: r.batchBytes, tokens: r.tokens,
    createdAt: new Date(r.createdAtMs).toISOString(), roles,
    sequence: {
      issued: rt.sequencer ? rt.sequencer.issued : null,
      taken: p ? p.issuedHigh : null,
      sent: p ? p.sentHigh : null,
      received: s ? s.highestKnown : null,
      complete: s ? s.completeUpTo : null,
      applied: s ? s.appliedUpTo : null,
    },
    lag: s ? {
      entries: s.highestKnown - s.appliedUpTo,
      bytes: s.queuedBytes,
      seconds: s.highestKnown === s.appliedUpTo ? 0 : appliedTime === null ? null : Math.max(0, (nowMs - appliedTime) / 1000),
    } : null,
    outgoing: p ? {
      waitingWrites: p.waitingWrites, bufferedBytes: p.bufferedBytes, unackedMessages: p.unackedMessages,
      sentMessages: rt.sentMessages, sentDataBytes: rt.sentDataBytes,
    } : null,
    members: [...rt.members],
    blocked: blockedOf(rt, self),
    recovered: s?.durable.recoveredAt !== null && s?.durable.recoveredAt !== undefined,
    pairs: pairs.map((x) => ({
      id: x.id, role: x.role, primaryArray: x.primaryArray, primaryVolume: x.primaryVolume, secondaryArray: x.secondaryArray,
      secondaryVolume: x.secondaryVolume, extents: x.extents ? x.extents.map((e) => ({ offset: e.offset, length: e.length })) : null,
    })),
  };
}

function blockedOf(rt: JournalRuntime, self: string): JournalStatus['blocked'] {
  const b = rt.secondary?.blockedAt;
  if (!b) return null;
  const t = b.token;
  if (!t) return { sequence: b.sequence, missing: 'its token (the sequencer\'s fan-out has not arrived)' };
  if (!rt.members.includes(t.secondary)) return { sequence: b.sequence, missing: `secondary ${t.secondary} joining the journal` };
  if (t.secondary !== self) return { sequence: b.sequence, missing: `nothing here (${t.secondary} holds it)` };
  const pair = rt.pairs.get(t.pair);
  return { sequence: b.sequence, missing: `the data of ${t.volume}@${t.offset}+${t.length} from ${pair?.primaryArray ?? 'its primary'} (pair ${t.pair})` };
}
