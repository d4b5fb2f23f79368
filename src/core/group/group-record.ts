// A consistency group as arrays persist it (SPEC §5): the coordinator's record, and the membership
// table every R1 and R2 member keeps. Both arrive from disk or a peer, so both are validated here.
import { ErrorCode, TidemarkError, invalidArgument } from '../errors.js';
import { isValidVolumeName } from '../volume/volume-record.js';

/** One member: a pair, named by where its halves live. */
export interface GroupMemberRef {
  /** The R1 array (the member's write windows and switches happen there). */
  readonly array: string;
  /** The pair's volume on the R1 array. */
  readonly volume: string;
  readonly pairId: string;
  readonly r2Array: string;
  readonly r2Volume: string;
}

/** What the coordinator keeps. `tag` is the highest tag it ever sent: it never hands one out twice. */
export interface GroupRecord {
  readonly name: string;
  readonly coordinator: string;
  /**
   * Grows each time another array takes the coordinator role over: members follow the table with
   * the highest epoch and take commands only from its coordinator, so an old one that returns
   * cannot switch them.
   */
  readonly epoch: number;
  readonly cycleMs: number;
  readonly members: readonly GroupMemberRef[];
  readonly tag: number;
}

/** What every member keeps (R1 and R2): enough to find the whole group after a disaster. */
export interface MembershipTable {
  readonly group: string;
  readonly coordinator: string;
  readonly epoch: number;
  readonly version: number;
  readonly cycleMs: number;
  readonly tag: number;
  readonly members: readonly GroupMemberRef[];
}

export const GROUP_NAME_RULE = '1–63 characters: letters, digits, dot, dash, underscore; starting with a letter or digit';

export function checkGroupName(name: string): void {
  if (!isValidVolumeName(name)) throw invalidArgument(`group name ${JSON.stringify(name)} is not valid: ${GROUP_NAME_RULE}`);
}

/** The key the coordinator's state machine knows a member by. */
export const memberKey = (m: Pick<GroupMemberRef, 'array' | 'volume'>): string => `${m.array}/${m.volume}`;

const corrupt = (context: string, what: string): TidemarkError =>
  new TidemarkError(ErrorCode.MetadataCorrupt, `${context}: ${what}`);

const isName = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 200;
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function parseMembers(value: unknown, context: string): GroupMemberRef[] {
  if (!Array.isArray(value)) throw corrupt(context, 'members is not a list');
  const members = value.map((m: unknown, i) => {
    const r = m as Partial<GroupMemberRef> | null;
    if (!r || !isName(r.array) || !isName(r.volume) || !isName(r.pairId) || !isName(r.r2Array) || !isName(r.r2Volume)) {
      throw corrupt(context, `member ${i} is not a member reference`);
    }
    return { array: r.array, volume: r.volume, pairId: r.pairId, r2Array: r.r2Array, r2Volume: r.r2Volume };
  });
  if (new Set(members.map(memberKey)).size !== members.length) throw corrupt(context, 'a member appears twice');
  return members;
}

export function parseGroupRecord(value: unknown, context: string): GroupRecord {
  const r = value as Partial<GroupRecord> | null;
  if (!r || !isName(r.name) || !isName(r.coordinator) || !isCount(r.cycleMs) || !isCount(r.tag)) throw corrupt(context, 'not a group record');
  const epoch = r.epoch ?? 0;
  if (!isCount(epoch)) throw corrupt(context, 'bad epoch');
  return { name: r.name, coordinator: r.coordinator, epoch, cycleMs: r.cycleMs, tag: r.tag, members: parseMembers(r.members, context) };
}

export function parseMembershipTable(value: unknown, context: string): MembershipTable {
  const t = value as Partial<MembershipTable> | null;
  if (!t || !isName(t.group) || !isName(t.coordinator) || !isCount(t.version) || !isCount(t.tag)) {
    throw new TidemarkError(ErrorCode.Protocol, `${context}: not a membership table`);
  }
  const epoch = t.epoch ?? 0;
  if (!isCount(epoch)) throw new TidemarkError(ErrorCode.Protocol, `${context}: bad epoch`);
  const cycleMs = t.cycleMs ?? 1000;
  if (!isCount(cycleMs)) throw new TidemarkError(ErrorCode.Protocol, `${context}: bad cycleMs`);
  return { group: t.group, coordinator: t.coordinator, epoch, version: t.version, cycleMs, tag: t.tag, members: parseMembers(t.members, context) };
}
