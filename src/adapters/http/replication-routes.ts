// The replication part of the HTTP API (SPEC §4): peers and remote pairs, in the same table form as routes.ts.
import { Type, type Static } from '@sinclair/typebox';
import { errorResponse as error, ok, param, type RouteSpec } from './route-kit.js';
import { literals, ShortName } from './schemas.js';
import { invalidArgument } from '../../core/errors.js';
import { LINK_FAILURE_POLICIES, MAX_MIN_AGE_MS, PAIR_INTENTS, PAIR_MODES } from '../../core/replication/pair-record.js';

const PAIR_STATES = ['synchronizing', 'synchronized', 'partitioned', 'suspended', 'split', 'failed-over', 'restoring', 'diverged'] as const;
export const PAIR_COMMANDS = ['establish', 'resume', 'suspend', 'split', 'failover', 'failback', 'restore', 'swap'] as const;
type PairCommandName = (typeof PAIR_COMMANDS)[number];

const ExtentSchema = Type.Object({
  offset: Type.Integer({ minimum: 0 }), length: Type.Integer({ minimum: 1 }),
}, { additionalProperties: false });

const Name = ShortName;

export const PeerSchema = Type.Object({
  name: Type.String(),
  address: Type.String({ description: 'HOST:PORT of the peer array\'s link listener, or `relay:R` for a peer reached through the relay R.' }),
  via: Type.Union([Type.String(), Type.Null()], {
    description: 'The relay the link to this peer runs through (end to end: the relay cannot read or alter it); null: reached directly.',
  }),
  link: Type.String({ description: 'connecting, up, down or auth-failed.' }),
  bytesSent: Type.Integer({ minimum: 0, description: 'Link bytes sent to this peer since the array started (frames, headers included).' }),
  bytesReceived: Type.Integer({ minimum: 0 }),
  retransmittedPackets: Type.Integer({ minimum: 0 }),
  lastError: Type.Union([Type.String(), Type.Null()], {
    description: 'Why the link last failed or was refused (authentication, peer protocol version mismatch, connection lost); kept after it recovers.',
  }),
  createdAt: Type.String({ format: 'date-time' }),
});
export type PeerView = Static<typeof PeerSchema>;

export const PairStatusSchema = Type.Object({
  pair: Type.String({ description: 'The pair\'s name on this array (what the pair routes take). R2 knows the pair by the name R1 gave it; pairs created before pairs had names are named after their local volume.' }),
  volume: Type.String({ description: 'The local volume: the source on R1, the replica on R2.' }),
  id: Type.String({ description: 'The pair id, the same on both arrays.' }),
  role: literals(['R1', 'R2']),
  mode: literals(PAIR_MODES),
  state: literals(PAIR_STATES),
  intent: literals(PAIR_INTENTS),
  localVolume: Type.String({ description: 'The same as volume (kept for older scripts).' }),
  peer: Type.String(),
  remoteVolume: Type.String(),
  onLinkFailure: literals(LINK_FAILURE_POLICIES),
  protectWith: Type.Union([Type.String(), Type.Null()]),
  extents: Type.Union([Type.Array(ExtentSchema), Type.Null()], { description: 'The byte ranges that replicate; null: the whole volume.' }),
  protecting: Type.Boolean({ description: 'A resync is waiting for R2\'s protection clone to be split.' }),
  generation: Type.Integer({ minimum: 1, description: 'Grows at every change of the writable side.' }),
  diverged: Type.Boolean({ description: 'Both sides were written after they parted; resync needs an explicit choice.' }),
  invalidTracks: Type.Object({
    local: Type.Integer({ minimum: 0, description: 'R1: tracks R2 may lack. R2: tracks its own hosts changed.' }),
    remote: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'The same figure on the peer, when known.' }),
    persisted: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: "`local` as last written to this array's disk: what a crash restarts from (plus the tracks of the activity log's hot extents). R1 clears the bits of tracks R2 holds in a flush round at most ~1 s after shipping them, so an idle synchronized pair shows 0 here. null: not written since the array started." }),
  }),
  tracksOwed: Type.Integer({ minimum: 0 }),
  tracksToPull: Type.Integer({ minimum: 0, description: 'During failback/restore: tracks R1 still takes from R2.' }),
  bytesOwed: Type.Integer({ minimum: 0 }),
  lagSeconds: Type.Number({ minimum: 0, description: 'Age of the oldest change R2 has not got.' }),
  link: Type.Object({ state: Type.String() }),
  peerMissing: Type.Boolean(),
  lastError: Type.Union([Type.String(), Type.Null()]),
  cycleMs: Type.Integer({ minimum: 100 }),
  minAgeMs: Type.Integer({ minimum: 0, description: 'adaptive mode: a change ships no sooner than this long after it was made (0: at once). Until then it counts in tracksOwed and lagSeconds.' }),
  cycleMemoryBytes: Type.Integer({ minimum: 0, description: "async mode: R1's cycles spill to disk above this much record data in memory." }),
  spillLimitBytes: Type.Integer({ minimum: 0, description: 'async mode: spilled cycle data above this makes R1 fall back to bitmaps (0: R1 never spills; it falls back at the memory budget).' }),
  group: Type.Union([Type.String(), Type.Null()], { description: 'R1: the consistency group that switches this pair\'s cycles.' }),
  cyclesFallback: Type.Union([Type.Object({
    at: Type.String({ format: 'date-time' }),
    reason: literals(['capture-limit', 'spill-failed', 'peer-stopped']),
    tracks: Type.Integer({ minimum: 0, description: 'Tracks the cycles held, now owed through the bitmaps.' }),
    message: Type.String(),
  }), Type.Null()], { description: "R1, async mode: the cycles' last fall back to bitmaps on their own (capture limit reached, spill failed, R2 stopped its cycles); null while cycles run. The pair resyncs through its bitmaps (R2 is not at a cycle boundary meanwhile), then starts cycles again." }),
  cycles: Type.Union([Type.Object({
    captureCycle: Type.Union([Type.Integer(), Type.Null()], { description: 'R1: the cycle capturing writes.' }),
    transmitCycle: Type.Union([Type.Integer(), Type.Null()], { description: 'R1: the cycle being sent; R2: the cycle being received.' }),
    appliedCycle: Type.Integer({ description: "R1: the last cycle R2 acknowledged committing (it applies it next); R2: the last cycle applied — R2's image is R1's at the end of it." }),
    remoteAppliedCycle: Type.Union([Type.Integer(), Type.Null()], { description: "R1: R2's applied cycle as last reported." }),
    recoverableCycle: Type.Union([Type.Integer(), Type.Null()], { description: "R2's recoverable point: the last cycle it committed, which it applies even after its own crash (R1: as R2 last reported)." }),
    captureBytes: Type.Integer({ minimum: 0, description: 'R1: bytes written in the capture cycle (what it will ship).' }),
    transmitBytes: Type.Integer({ minimum: 0, description: 'R1: bytes of the cycle being sent.' }),
    captureRecords: Type.Integer({ minimum: 0 }),
    transmitRecords: Type.Integer({ minimum: 0 }),
    memoryBytes: Type.Integer({ minimum: 0, description: 'R1: record data of the cycles held in memory.' }),
    spilledRecords: Type.Integer({ minimum: 0, description: 'R1: records of the cycles spilled to disk.' }),
    spilledBytes: Type.Integer({ minimum: 0, description: 'R1: bytes of spill slots on disk (a record per slot).' }),
  }), Type.Null()], { description: 'async mode: the ordered cycles (null while none run, e.g. during a resync).' }),
  counters: Type.Object({
    writesForwarded: Type.Integer(), recordsShipped: Type.Integer(), bytesShipped: Type.Integer(), zeroMarkers: Type.Integer(),
    recordsIdentical: Type.Integer(), tracksCopied: Type.Integer(),
    tracksCompared: Type.Integer({ description: "Tracks the background copy compared with R2's copy record by record (digests) because which records changed was unknown — after R1 restarted, an establish, a lost link session: what a resync examined. Since the array started." }),
    flushRounds: Type.Integer({ description: 'R1: flush rounds it started on its own (flush here, flush on R2, persist the cleared bits) since the array started.' }),
    recordsPulled: Type.Integer(), bytesPulled: Type.Integer(),
    cycleFallbacks: Type.Integer({ description: 'async: times the cycles fell back to bitmaps on their own since the array started.' }),
  }),
});
/** A pair's status as the API gives it: the one definition, used by the array and the CLI alike. */
export type PairStatusView = Static<typeof PairStatusSchema>;
export type PairCyclesView = NonNullable<PairStatusView['cycles']>;
export type CyclesFallbackView = NonNullable<PairStatusView['cyclesFallback']>;

/** What the API needs from the array's replication. */
export interface ReplicationBackend {
  addPeer(name: string, to: { address: string } | { via: string }, secretFile: string): Promise<PeerView>;
  listPeers(): PeerView[];
  showPeer(name: string): PeerView;
  removePeer(name: string): Promise<void>;
  createPair(body: PairCreateBody): Promise<PairStatusView>;
  listPairs(): PairStatusView[];
  showPair(pair: string): Promise<PairStatusView>;
  pairCommand(pair: string, command: PairCommandName): Promise<PairStatusView>;
  setPairMode(pair: string, mode: (typeof PAIR_MODES)[number]): Promise<PairStatusView>;
  deletePair(pair: string): Promise<{ peerDeleted: boolean }>;
}

const PeerBody = Type.Object({
  name: Name,
  address: Type.Optional(Type.String({ minLength: 3, maxLength: 300, description: 'HOST:PORT of the peer\'s link listener (or give `via`).' })),
  via: Type.Optional(Type.String({ minLength: 1, maxLength: 63, description: 'Reach the peer through this one (a direct peer of this array, and of the new peer) acting as a relay: the link runs end to end inside it (or give `address`).' })),
  secretFile: Type.String({ minLength: 1, maxLength: 4096, description: 'Path, on the array\'s machine, of a file holding the shared secret (≥ 16 bytes).' }),
}, { additionalProperties: false });
const PairCreateBodySchema = Type.Object({
  volume: Name,
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$',
    description: 'The pair\'s name, unique on this array and on the peer. Defaults to the volume\'s name while the volume has no pair; required when it has one (TM_ERR_PAIR_NAME_REQUIRED).' })),
  peer: Name,
  remoteVolume: Name,
  mode: literals(PAIR_MODES),
  onLinkFailure: Type.Optional(literals(LINK_FAILURE_POLICIES)),
  protectWith: Type.Optional(Type.String({ minLength: 1, maxLength: 63, description: 'A clone session of the remote volume, on the peer, split before every resync.' })),
  extents: Type.Optional(Type.Array(ExtentSchema, { minItems: 1, maxItems: 1024, description: 'Replicate only these byte ranges (whole tracks); the rest of R2 stays its hosts\'.' })),
  cycleMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 3_600_000, description: 'async mode: the shortest time between cycle switches (default 1000).' })),
  cycleMemoryBytes: Type.Optional(Type.Integer({ minimum: 64 * 1024, description: "async mode: record data R1's cycles keep in memory before spilling to disk (default 64 MiB)." })),
  spillLimitBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'async mode: cycle data R1 may spill to disk (under the data directory) before the pair falls back to bitmaps (default 4 GiB; 0: never spill).' })),
  minAgeMs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_MIN_AGE_MS, description: 'adaptive mode only: a change ships no sooner than this long after it was made, so a track rewritten all the time ships once per interval (default 0: at once).' })),
}, { additionalProperties: false });
export type PairCreateBody = Static<typeof PairCreateBodySchema>;
const ModeBody = Type.Object({ mode: literals(PAIR_MODES) }, { additionalProperties: false });
const NameParams = Type.Object({ name: Name });
const PairParams = Type.Object({ pair: Name });
const CommandParams = Type.Object({ pair: Name, command: literals(PAIR_COMMANDS) });

const stateErrors = {
  404: error('No such peer, volume or pair (TM_ERR_NOT_FOUND).'),
  409: error('Not allowed now (TM_ERR_INVALID_STATE, TM_ERR_PAIR_DIVERGED, TM_ERR_PAIR_CONFLICT, TM_ERR_PAIR_NAME_REQUIRED, TM_ERR_VOLUME_BUSY, TM_ERR_ALREADY_EXISTS).'),
  503: error('The link to the peer is down (TM_ERR_LINK_DOWN).'),
};

export const REPLICATION_ROUTES: readonly RouteSpec<ReplicationBackend>[] = [
  {
    method: 'POST', url: '/v1/peers', operationId: 'addPeer', tag: 'replication',
    summary: 'Adds a peer array: its link address, or the peer it is reached through (a relay), and the shared secret both arrays authenticate the link with.',
    body: PeerBody,
    responses: { 201: { description: 'The peer.', schema: PeerSchema }, 400: error('Bad name, address, relay or secret, or both address and via (TM_ERR_INVALID_ARGUMENT).'), ...stateErrors },
    handler: async (request, replication) => {
      const b = request.body as Static<typeof PeerBody>;
      if ((b.address === undefined) === (b.via === undefined)) throw invalidArgument('give the peer\'s link address or the relay it is reached through (via), not both');
      return ok(await replication.addPeer(b.name, b.address !== undefined ? { address: b.address } : { via: b.via! }, b.secretFile), 201);
    },
  },
  {
    method: 'GET', url: '/v1/peers', operationId: 'listPeers', tag: 'replication', summary: 'Every peer and its link state.',
    responses: { 200: { description: 'The peers.', schema: Type.Object({ peers: Type.Array(PeerSchema) }) } },
    handler: async (_request, replication) => ok({ peers: replication.listPeers() }),
  },
  {
    method: 'GET', url: '/v1/peers/:name', operationId: 'getPeer', tag: 'replication', summary: 'One peer.',
    params: NameParams,
    responses: { 200: { description: 'The peer.', schema: PeerSchema }, 404: stateErrors[404] },
    handler: async (request, replication) => ok(replication.showPeer(param(request, 'name'))),
  },
  {
    method: 'DELETE', url: '/v1/peers/:name', operationId: 'removePeer', tag: 'replication', summary: 'Removes a peer without pairs.',
    params: NameParams,
    responses: { 200: { description: 'Removed.', schema: Type.Object({ name: Type.String(), removed: Type.Literal(true) }) }, ...stateErrors },
    handler: async (request, replication) => {
      await replication.removePeer(param(request, 'name'));
      return ok({ name: param(request, 'name'), removed: true });
    },
  },
  {
    method: 'POST', url: '/v1/pairs', operationId: 'createPair', tag: 'replication',
    summary: 'Pairs a local volume (R1) with a volume of the same size on a peer (R2): R2 becomes write-disabled and a full establish starts. A volume may be the R1 of up to 4 pairs (fan-out) and the R2 of one (a chain).',
    body: PairCreateBodySchema,
    responses: {
      201: { description: 'The new pair.', schema: PairStatusSchema }, 400: error('Sizes differ or bad input (TM_ERR_INVALID_ARGUMENT).'), ...stateErrors,
      422: error('The volume is already the R1 of 4 pairs (TM_ERR_LIMIT_EXCEEDED).'),
    },
    handler: async (request, replication) => ok(await replication.createPair(request.body as PairCreateBody), 201),
  },
  {
    method: 'GET', url: '/v1/pairs', operationId: 'listPairs', tag: 'replication', summary: 'Every pair half on this array.',
    responses: { 200: { description: 'The pairs.', schema: Type.Object({ pairs: Type.Array(PairStatusSchema) }) } },
    handler: async (_request, replication) => ok({ pairs: replication.listPairs() }),
  },
  {
    method: 'GET', url: '/v1/pairs/:pair', operationId: 'getPair', tag: 'replication',
    summary: 'One pair (by name): role, mode, state, invalid tracks on both sides, bytes owed, lag, link, generation.',
    params: PairParams,
    responses: { 200: { description: 'The pair.', schema: PairStatusSchema }, 404: stateErrors[404] },
    handler: async (request, replication) => ok(await replication.showPair(param(request, 'pair'))),
  },
  {
    method: 'POST', url: '/v1/pairs/:pair/:command', operationId: 'pairCommand', tag: 'replication',
    summary: 'establish | resume | suspend | split | failover | failback | restore | swap (see docs/replication.md).',
    params: CommandParams,
    responses: { 200: { description: 'The pair after the command.', schema: PairStatusSchema }, ...stateErrors },
    handler: async (request, replication) => ok(await replication.pairCommand(param(request, 'pair'), param(request, 'command') as PairCommandName)),
  },
  {
    method: 'PUT', url: '/v1/pairs/:pair/mode', operationId: 'setPairMode', tag: 'replication', summary: 'Switches the mode while running.',
    params: PairParams,
    body: ModeBody,
    responses: { 200: { description: 'The pair.', schema: PairStatusSchema }, ...stateErrors },
    handler: async (request, replication) => ok(await replication.setPairMode(param(request, 'pair'), (request.body as Static<typeof ModeBody>).mode as (typeof PAIR_MODES)[number])),
  },
  {
    method: 'DELETE', url: '/v1/pairs/:pair', operationId: 'deletePair', tag: 'replication',
    summary: 'Deletes the pair (both halves when the link is up); both volumes become ready unless their other pairs say otherwise.',
    params: PairParams,
    responses: { 200: { description: 'Deleted.', schema: Type.Object({ pair: Type.String(), deleted: Type.Literal(true), peerDeleted: Type.Boolean() }) }, ...stateErrors },
    handler: async (request, replication) => {
      const { peerDeleted } = await replication.deletePair(param(request, 'pair'));
      return ok({ pair: param(request, 'pair'), deleted: true, peerDeleted });
    },
  },
];
