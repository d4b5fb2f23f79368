// The recovery decision for a consistency group after a disaster on the R1 side (SPEC §5, seed
// 003): which members' complete received cycle to apply and which to discard so that every R2
// ends at the same coordinator tag.
//
// Each member first finishes its committed cycles (a committed cycle is always applied). Then:
//   - an incomplete received cycle is discarded;
//   - if every member holds a complete received cycle and all tags are equal, all are applied;
//   - otherwise the complete cycles with the lower tag are applied and those with the higher
//     discarded.
// "Lower" is taken against the whole group: the target is the lowest tag any member can reach
// (its complete received cycle's tag, or else its committed tag). A member whose complete cycle
// carries the target applies it; one whose cycle is newer discards it. Read literally, the seed's
// rule would apply member A's complete cycle s while member B, with only an incomplete cycle s,
// stays at s−1 — the group would be inconsistent — so the target must count members without a
// complete cycle too. The protocol guarantees no member has committed past the target (a commit
// of cycle s needs every member's s sealed, i.e. persisted complete); if it happened anyway the
// decision reports the group as not recoverable to one point rather than guess.
import { assert } from '../lib/assert.js';

export interface MemberRecoveryInput {
  readonly member: string;
  /** Tag of the newest cycle the member reaches on its own (applied or committed); null: none since it joined. */
  readonly committedTag: number | null;
  /** Its received cycle beyond that; the tag of an incomplete one may be unknown. */
  readonly received: { readonly tag: number | null; readonly complete: boolean } | null;
}

export type RecoveryAction = 'apply' | 'discard' | 'none';

export interface MemberDecision {
  readonly member: string;
  readonly action: RecoveryAction;
  readonly reason: string;
  /** The tag the member's R2 holds after the action. */
  readonly resultTag: number | null;
}

export interface GroupRecoveryDecision {
  /** The coordinator tag every R2 ends at (null: before the first tag). */
  readonly targetTag: number | null;
  readonly members: readonly MemberDecision[];
  /** False when some member already committed past what another can reach (a protocol bug). */
  readonly consistent: boolean;
  readonly problems: readonly string[];
}

/** null (nothing yet) orders before every tag. */
const lower = (a: number | null, b: number | null): boolean => a !== b && (a === null || (b !== null && a < b));

export interface GroupRecoveryOptions {
  /**
   * Every member's R2 image before its first group-tagged cycle is the same moment (the group was
   * formed at rest, all members starting together). Otherwise — members added to running pairs, the
   * usual case — a member with no group-tagged cycle committed or complete is at no group boundary,
   * and a group with such a member and others cannot reach one point.
   */
  readonly startIsGroupPoint?: boolean;
}

export function decideGroupRecovery(inputs: readonly MemberRecoveryInput[], options: GroupRecoveryOptions = {}): GroupRecoveryDecision {
  assert(new Set(inputs.map((m) => m.member)).size === inputs.length, 'members are distinct');
  for (const m of inputs) {
    if (m.received?.complete) {
      assert(m.received.tag !== null, `member ${m.member}: a complete cycle has a tag`);
      assert(lower(m.committedTag, m.received.tag), `member ${m.member}: received tag follows the committed tag`);
    }
  }
  const reachable = (m: MemberRecoveryInput): number | null => (m.received?.complete ? m.received.tag : m.committedTag);
  let target: number | null | undefined;
  for (const m of inputs) {
    const r = reachable(m);
    if (target === undefined || lower(r, target)) target = r;
  }
  const targetTag = target ?? null;
  const problems: string[] = [];
  if (targetTag === null && inputs.length > 1 && options.startIsGroupPoint !== true) {
    const none = inputs.filter((m) => reachable(m) === null).map((m) => m.member);
    problems.push(`member(s) ${none.join(', ')} reach no group-tagged cycle yet: their R2s are at points of their own, not at a group boundary`);
  }
  const members = inputs.map((m): MemberDecision => {
    const r = m.received;
    let decision: MemberDecision;
    if (r === null) {
      decision = { member: m.member, action: 'none', reason: 'no received cycle', resultTag: m.committedTag };
    } else if (!r.complete) {
      decision = { member: m.member, action: 'discard', reason: 'received cycle is incomplete', resultTag: m.committedTag };
    } else if (r.tag === targetTag) {
      decision = { member: m.member, action: 'apply', reason: `complete cycle with tag ${r.tag}, the group's recovery point`, resultTag: r.tag };
    } else {
      decision = { member: m.member, action: 'discard', reason: `complete cycle with tag ${r.tag}, newer than the group's recovery point ${targetTag}`, resultTag: m.committedTag };
    }
    if (decision.resultTag !== targetTag) {
      problems.push(`member ${m.member} ends at tag ${decision.resultTag}, not the group's ${targetTag}`);
    }
    return decision;
  });
  return { targetTag, members, consistent: problems.length === 0, problems };
}
