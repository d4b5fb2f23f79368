// JSON schemas (TypeBox) for every request and response of the HTTP API. They validate input,
// shape output, and are the source of the OpenAPI document, so the three cannot disagree.
import { Type, type SchemaOptions, type Static, type TLiteral, type TNull, type TSchema, type TUnion } from '@sinclair/typebox';
import { ErrorCode } from '../../core/errors.js';
import { MAX_TRACK_BYTES, MAX_VOLUME_BYTES, MIN_TRACK_BYTES } from '../../core/volume/geometry.js';
import { VOLUME_STATES } from '../../core/volume/state.js';
import { MAX_ALLOWED_CLIENTS, VOLUME_NAME_RULE } from '../../core/volume/volume-record.js';

/** Most change runs one response carries; a client pages on with `fromTrack`. */
export const MAX_CHANGE_RUNS = 100_000;
export const DEFAULT_CHANGE_RUNS = 10_000;

/**
 * A union of string literals whose static type is the union of `values` (a mapped array of
 * literals alone gives TypeBox only `string`), so types derived from a schema keep it.
 */
export const literals = <T extends string>(values: readonly T[], options?: SchemaOptions): TUnion<Array<TLiteral<T>>> =>
  Type.Union(values.map((v) => Type.Literal(v)), options);

/** The name of a peer, pair or group in a request. */
export const ShortName = Type.String({ minLength: 1, maxLength: 63 });

export const Nullable = <T extends TSchema>(schema: T, options?: SchemaOptions): TUnion<[T, TNull]> =>
  Type.Union([schema, Type.Null()], options);

const literalUnion = <T extends string>(values: readonly T[], description: string): TUnion<Array<TLiteral<T>>> =>
  literals(values, { description });

export const VolumeStateSchema = literalUnion(VOLUME_STATES,
  'Host access: ready (read/write), write-disabled (reads only), not-ready (no access).');

export const AddressSchema = Type.Object({
  host: Type.String(),
  port: Type.Integer({ minimum: 0, maximum: 65535 }),
}, { additionalProperties: false });

export const ErrorSchema = Type.Object({
  error: Type.Object({
    code: literalUnion(Object.values(ErrorCode), 'Stable error code.'),
    message: Type.String(),
    details: Type.Object({}, { additionalProperties: true }),
  }, { additionalProperties: false }),
}, { additionalProperties: false, description: 'Every error response has this shape.' });

export const ArrayInfoSchema = Type.Object({
  name: Type.String(),
  version: Type.String({ description: 'tidemark version of the daemon.' }),
  startedAt: Type.String({ format: 'date-time' }),
  uptimeSeconds: Type.Number({ minimum: 0 }),
  api: AddressSchema,
  nbd: Type.Object({
    tcp: Type.Union([AddressSchema, Type.Null()]),
    socket: Type.Union([Type.String(), Type.Null()]),
  }, { additionalProperties: false }),
  volumeCount: Type.Integer({ minimum: 0 }),
}, { additionalProperties: false });

export const VolumeSchema = Type.Object({
  name: Type.String(),
  uuid: Type.String(),
  sizeBytes: Type.Integer({ minimum: 1 }),
  trackBytes: Type.Integer({ minimum: 1, description: 'Unit of change tracking and copying.' }),
  recordBytes: Type.Integer({ minimum: 1, description: 'Unit of transmission.' }),
  trackCount: Type.Integer({ minimum: 1 }),
  state: VolumeStateSchema,
  createdAt: Type.String({ format: 'date-time' }),
  exports: Type.Integer({ minimum: 0, description: 'NBD connections using the volume now.' }),
  changedTracks: Type.Integer({ minimum: 0, description: 'Tracks written since the change tracker was last reset.' }),
  hotExtents: Type.Integer({ minimum: 0, description: 'Extents in the activity log (recopied after a crash).' }),
  lastRecovery: Type.Object({
    crashed: Type.Boolean({ description: 'The previous run ended without a clean shutdown.' }),
    tracksMarked: Type.Integer({ minimum: 0, description: 'Tracks marked changed from the activity log at start-up.' }),
  }, { additionalProperties: false }),
  allowedClients: Type.Array(Type.String(), {
    description: 'NBD client certificate names (CN or subjectAltName) allowed to use the volume; empty: any client.',
  }),
}, { additionalProperties: false });

export const VolumeListSchema = Type.Object({ volumes: Type.Array(VolumeSchema) }, { additionalProperties: false });

export const VolumeNameParams = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 255 }),
}, { additionalProperties: false });

export const CreateVolumeBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 63, description: VOLUME_NAME_RULE }),
  sizeBytes: Type.Integer({ minimum: 1, maximum: MAX_VOLUME_BYTES, description: 'A multiple of 4096.' }),
  trackBytes: Type.Optional(Type.Integer({
    minimum: MIN_TRACK_BYTES, maximum: MAX_TRACK_BYTES, description: 'A power of two; default 65536.',
  })),
}, { additionalProperties: false });

export const SetStateBody = Type.Object({ state: VolumeStateSchema }, { additionalProperties: false });

export const SetAccessBody = Type.Object({
  allowedClients: Type.Array(Type.String({ minLength: 1, maxLength: 255 }), {
    maxItems: MAX_ALLOWED_CLIENTS,
    description: 'Client certificate names (CN or subjectAltName) that may use the volume over NBD; [] lets any client in. ' +
      'Needs `array start --tls-ca` to mean anything: without verified client certificates no client has a name.',
  }),
}, { additionalProperties: false });

export const DeletedSchema = Type.Object({
  name: Type.String(),
  deleted: Type.Literal(true),
}, { additionalProperties: false });

export const ChangesQuery = Type.Object({
  fromTrack: Type.Optional(Type.Integer({ minimum: 0, description: 'First track to report (paging); default 0.' })),
  maxRuns: Type.Optional(Type.Integer({
    minimum: 1, maximum: MAX_CHANGE_RUNS, description: `Most runs to return; default ${DEFAULT_CHANGE_RUNS}.`,
  })),
}, { additionalProperties: false });

export const ChangesSchema = Type.Object({
  volume: Type.String(),
  trackBytes: Type.Integer({ minimum: 1 }),
  trackCount: Type.Integer({ minimum: 1 }),
  changedTracks: Type.Integer({ minimum: 0, description: 'All changed tracks, not only those in `runs`.' }),
  runs: Type.Array(Type.Object({
    start: Type.Integer({ minimum: 0, description: 'First changed track of the run.' }),
    end: Type.Integer({ minimum: 1, description: 'One past the last changed track of the run.' }),
  }, { additionalProperties: false }), { description: 'Maximal runs of changed tracks, in order.' }),
  nextTrack: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], {
    description: 'Where the next page starts when `runs` was cut at `maxRuns`; null when complete.',
  }),
}, { additionalProperties: false });

export type ArrayInfo = Static<typeof ArrayInfoSchema>;
export type VolumeView = Static<typeof VolumeSchema>;
export type Changes = Static<typeof ChangesSchema>;
export type CreateVolumeRequest = Static<typeof CreateVolumeBody>;
export type ApiErrorBody = Static<typeof ErrorSchema>;

/** Schemas the OpenAPI document names under components.schemas. */
export const NAMED_SCHEMAS: Readonly<Record<string, TSchema>> = {
  Error: ErrorSchema,
  ArrayInfo: ArrayInfoSchema,
  Volume: VolumeSchema,
  VolumeList: VolumeListSchema,
  CreateVolume: CreateVolumeBody,
  SetState: SetStateBody,
  SetAccess: SetAccessBody,
  Deleted: DeletedSchema,
  Changes: ChangesSchema,
  VolumeState: VolumeStateSchema,
  Address: AddressSchema,
};
