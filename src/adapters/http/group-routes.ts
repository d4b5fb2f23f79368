// The consistency-group part of the HTTP API (SPEC §5), in the same table form as routes.ts.
import { Type, type Static } from '@sinclair/typebox';
import { errorResponse as error, ok, param, type RouteSpec } from './route-kit.js';
import { Nullable, ShortName } from './schemas.js';

const Name = ShortName;

const MemberStatusSchema = Type.Object({
  member: Type.String(),
  pairState: Type.String(),
  captureCycle: Nullable(Type.Integer()),
  captureTag: Nullable(Type.Integer({ description: 'The coordinator tag of the cycle capturing writes.' })),
  transmitCycle: Nullable(Type.Integer()),
  committedCycle: Nullable(Type.Integer({ description: 'The last cycle R2 committed; its image is R1\'s at the end of it once applied.' })),
  ready: Type.Boolean({ description: 'Ready for the next switch (transmit cycle sealed, previous commit acknowledged).' }),
  lagSeconds: Type.Number({ minimum: 0 }),
  windowOpen: Type.Boolean(),
  lastError: Nullable(Type.String()),
});

export const GroupViewSchema = Type.Object({
  name: Type.String(),
  coordinator: Type.String({ description: 'The array that switches the members\' cycles.' }),
  cycleMs: Type.Integer({ minimum: 100 }),
  phase: Type.String({ description: 'waiting, polling, opening, switching, closing or reconfiguring.' }),
  tag: Type.Integer({ minimum: 0, description: 'The group\'s current capture tag.' }),
  switches: Type.Integer({ minimum: 0, description: 'Switches since the coordinator started.' }),
  waitingFor: Type.Array(Type.String(), { description: 'Members the current phase waits for.' }),
  lagSeconds: Type.Number({ minimum: 0, description: 'The largest member lag.' }),
  members: Type.Array(Type.Object({
    member: Type.String({ description: 'ARRAY/VOLUME of the R1 half.' }),
    array: Type.String(), volume: Type.String(), pairId: Type.String(), r2Array: Type.String(), r2Volume: Type.String(),
    status: Type.Union([MemberStatusSchema, Type.Null()]),
    error: Nullable(Type.String()),
  })),
  evicted: Type.Array(Type.Object({ member: Type.String(), reason: Type.String() }), { description: 'Members evicted, or let go because they left on their own, with why.' }),
  lastSwitchAgeSeconds: Type.Number({ minimum: 0, description: 'Seconds since the group last switched cycles.' }),
  stalled: Type.Union([Type.Object({ cause: Type.String({ description: 'The phase, who it waits for and what they last said.' }) }), Type.Null()], {
    description: 'Set while the group has not switched for longer than its stall bound (10 cycles, at least 25 s).',
  }),
});
/** A group's status as the API gives it: the one definition, used by the array and the CLI alike. */
export type GroupViewBody = Static<typeof GroupViewSchema>;
export type GroupMemberViewBody = GroupViewBody['members'][number];
export type MemberStatusView = Static<typeof MemberStatusSchema>;

const GroupSummarySchema = Type.Object({
  name: Type.String(), coordinator: Type.String(), members: Type.Integer({ minimum: 0 }), coordinatedHere: Type.Boolean(),
});

const RecoverySchema = Type.Object({
  group: Type.String(),
  carriedOut: Type.Boolean({ description: 'False: nothing changed (dry run, or the members cannot reach one tag).' }),
  targetTag: Nullable(Type.Integer({ description: 'The tag every R2 ends at.' })),
  consistent: Type.Boolean(),
  problems: Type.Array(Type.String()),
  members: Type.Array(Type.Object({
    member: Type.String(), r2Array: Type.String(), r2Volume: Type.String(),
    action: Type.String({ description: 'apply, discard or none: what happens to the member\'s complete received cycle.' }),
    reason: Type.String(),
    committedTag: Nullable(Type.Integer()),
    receivedTag: Nullable(Type.Integer()),
    receivedComplete: Nullable(Type.Boolean()),
    resultTag: Nullable(Type.Integer()),
    appliedCycle: Nullable(Type.Integer()),
  })),
});
export type GroupRecoveryBody = Static<typeof RecoverySchema>;

/** What the API needs from the array's consistency groups. */
export interface GroupBackend {
  create(name: string, cycleMs: number | undefined): Promise<GroupViewBody>;
  list(): Array<Static<typeof GroupSummarySchema>>;
  show(name: string): Promise<GroupViewBody>;
  delete(name: string): Promise<void>;
  add(name: string, pair: string, array: string | undefined): Promise<GroupViewBody>;
  remove(name: string, pair: string, array: string | undefined): Promise<GroupViewBody>;
  recover(name: string, dryRun: boolean, force: boolean): Promise<GroupRecoveryBody>;
  takeOver(name: string, force: boolean): Promise<GroupViewBody>;
}

const CreateBody = Type.Object({
  name: Name,
  cycleMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 3_600_000, description: 'Time between cycle switches (default 1000).' })),
}, { additionalProperties: false });
const MemberBody = Type.Object({
  pair: Name,
  array: Type.Optional(Type.String({ minLength: 1, maxLength: 63, description: 'The array holding the pair\'s R1 half (a peer of the coordinator); default: this array.' })),
}, { additionalProperties: false });
const RecoverBody = Type.Object({
  dryRun: Type.Optional(Type.Boolean({ description: 'Decide and report only.' })),
  force: Type.Optional(Type.Boolean({ description: 'Recover although a member\'s link to its R1 is up.' })),
}, { additionalProperties: false });
const TakeOverBody = Type.Object({
  force: Type.Optional(Type.Boolean({ description: 'Take over although the old coordinator still answers.' })),
}, { additionalProperties: false });
const NameParams = Type.Object({ name: Name });
const MemberParams = Type.Object({ name: Name, array: Name, pair: Name });

const stateErrors = {
  404: error('No such group, member or pair (TM_ERR_NOT_FOUND).'),
  409: error('Not allowed now (TM_ERR_INVALID_STATE, TM_ERR_ALREADY_EXISTS).'),
  503: error('A member or the coordinator cannot be reached (TM_ERR_LINK_DOWN, TM_ERR_UNAVAILABLE).'),
};

export const GROUP_ROUTES: readonly RouteSpec<GroupBackend>[] = [
  {
    method: 'POST', url: '/v1/groups', operationId: 'createGroup', tag: 'groups',
    summary: 'Creates a consistency group coordinated by this array.',
    body: CreateBody,
    responses: { 201: { description: 'The group.', schema: GroupViewSchema }, 400: error('Bad name or cycle time (TM_ERR_INVALID_ARGUMENT).'), ...stateErrors },
    handler: async (request, groups) => {
      const b = request.body as Static<typeof CreateBody>;
      return ok(await groups.create(b.name, b.cycleMs), 201);
    },
  },
  {
    method: 'GET', url: '/v1/groups', operationId: 'listGroups', tag: 'groups', summary: 'Groups this array coordinates or holds members of.',
    responses: { 200: { description: 'The groups.', schema: Type.Object({ groups: Type.Array(GroupSummarySchema) }) } },
    handler: async (_request, groups) => ok({ groups: groups.list() }),
  },
  {
    method: 'GET', url: '/v1/groups/:name', operationId: 'getGroup', tag: 'groups',
    summary: 'The group: phase, tag, who it waits for, and per member its cycles, readiness and lag (asked of the coordinator).',
    params: NameParams,
    responses: { 200: { description: 'The group.', schema: GroupViewSchema }, ...stateErrors },
    handler: async (request, groups) => ok(await groups.show(param(request, 'name'))),
  },
  {
    method: 'DELETE', url: '/v1/groups/:name', operationId: 'deleteGroup', tag: 'groups', summary: 'Deletes a group without members.',
    params: NameParams,
    responses: { 200: { description: 'Deleted.', schema: Type.Object({ name: Type.String(), deleted: Type.Literal(true) }) }, ...stateErrors },
    handler: async (request, groups) => {
      await groups.delete(param(request, 'name'));
      return ok({ name: param(request, 'name'), deleted: true });
    },
  },
  {
    method: 'POST', url: '/v1/groups/:name/members', operationId: 'addGroupMember', tag: 'groups',
    summary: 'Adds an async pair (named by its R1 volume on its R1 array): its next cycles switch with the group.',
    params: NameParams,
    body: MemberBody,
    responses: { 200: { description: 'The group.', schema: GroupViewSchema }, ...stateErrors },
    handler: async (request, groups) => {
      const b = request.body as Static<typeof MemberBody>;
      return ok(await groups.add(param(request, 'name'), b.pair, b.array));
    },
  },
  {
    method: 'DELETE', url: '/v1/groups/:name/members/:array/:pair', operationId: 'removeGroupMember', tag: 'groups',
    summary: 'Removes a member (ARRAY: its R1 array, `-` for this one): its pair goes on replicating in async mode, switching on its own.',
    params: MemberParams,
    responses: { 200: { description: 'The group.', schema: GroupViewSchema }, ...stateErrors },
    handler: async (request, groups) => {
      const array = param(request, 'array');
      return ok(await groups.remove(param(request, 'name'), param(request, 'pair'), array === '-' ? undefined : array));
    },
  },
  {
    method: 'POST', url: '/v1/groups/:name/takeover', operationId: 'takeOverGroup', tag: 'groups',
    summary: 'Makes this array the group\'s coordinator after the old one was lost (run on an array holding a member); the old one, if it returns, stops.',
    params: NameParams,
    body: TakeOverBody,
    responses: { 200: { description: 'The group, now coordinated here.', schema: GroupViewSchema }, ...stateErrors },
    handler: async (request, groups) => {
      const b = (request.body ?? {}) as Static<typeof TakeOverBody>;
      return ok(await groups.takeOver(param(request, 'name'), b.force ?? false));
    },
  },
  {
    method: 'POST', url: '/v1/groups/:name/recover', operationId: 'recoverGroup', tag: 'groups',
    summary: 'After losing the R1 side: brings every R2 member to the same tag (SPEC §5) — run on an array holding an R2 member.',
    params: NameParams,
    body: RecoverBody,
    responses: { 200: { description: 'The decision per member and whether it was carried out.', schema: RecoverySchema }, ...stateErrors },
    handler: async (request, groups) => {
      const b = (request.body ?? {}) as Static<typeof RecoverBody>;
      return ok(await groups.recover(param(request, 'name'), b.dryRun ?? false, b.force ?? false));
    },
  },
];
