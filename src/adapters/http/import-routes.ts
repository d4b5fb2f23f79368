// The online-import part of the HTTP API (SPEC §8, online import; docs/migration.md).
import { Type, type Static } from '@sinclair/typebox';
import { errorResponse as error, ok, param, type RouteSpec } from './route-kit.js';
import { literals } from './schemas.js';
import { IMPORT_STATES } from '../../core/migration/import-machine.js';

/** What the API needs from the array's imports. */
export interface ImportBackend {
  start(name: string, source: string, writeBack: boolean, maxBytesPerSecond: number | null): Promise<ImportStatus>;
  finish(name: string): Promise<ImportStatus>;
  show(name: string): ImportStatus;
  list(): ImportStatus[];
}

const Name = Type.String({ minLength: 1, maxLength: 255 });

export const ImportStatusSchema = Type.Object({
  name: Type.String({ description: 'The volume being filled from the source (exported from the start).' }),
  source: Type.String({ description: 'nbd://HOST[:PORT]/EXPORT' }),
  sizeBytes: Type.Integer({ minimum: 1 }),
  writeBack: Type.Boolean({ description: 'Host writes also reach the source before they are acknowledged.' }),
  state: literals(IMPORT_STATES),
  tracksLeft: Type.Integer({ minimum: 0, description: 'Tracks not yet fetched from the source.' }),
  trackCount: Type.Integer({ minimum: 0 }),
  tracksCopied: Type.Integer({ minimum: 0, description: 'Tracks fetched since the daemon started (background copy and host reads).' }),
  bytesCopied: Type.Integer({ minimum: 0 }),
  percent: Type.Number({ minimum: 0, maximum: 100 }),
  bytesPerSecond: Type.Number({ minimum: 0 }),
  etaSeconds: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  maxBytesPerSecond: Type.Union([Type.Number({ exclusiveMinimum: 0 }), Type.Null()], { description: 'Cap on the background copy.' }),
  sourceConnected: Type.Boolean(),
  lastError: Type.Union([Type.String(), Type.Null()], { description: 'The source\'s last failure (reads of unfetched tracks fail while it lasts).' }),
  startedAt: Type.String({ format: 'date-time' }),
});
/** An import's status as the API gives it: the one definition, used by the array and the CLI alike. */
export type ImportStatus = Static<typeof ImportStatusSchema>;

const NameParams = Type.Object({ name: Name });
const StartBody = Type.Object({
  name: Name,
  source: Type.String({ minLength: 7, maxLength: 4200, pattern: '^nbd://' }),
  writeBack: Type.Optional(Type.Boolean()),
  maxBytesPerSecond: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
}, { additionalProperties: false });

export const IMPORT_ROUTES: readonly RouteSpec<ImportBackend>[] = [
  {
    method: 'POST', url: '/v1/imports', operationId: 'startImport', tag: 'imports',
    summary: 'Creates a volume from another NBD server\'s export and serves it at once; a background copy fetches the data.',
    body: StartBody,
    responses: {
      201: { description: 'The new import.', schema: ImportStatusSchema },
      400: error('A bad name or URL, or --write-back to a read-only export (TM_ERR_INVALID_ARGUMENT).'),
      404: error('The server has no such export (TM_ERR_NOT_FOUND).'),
      409: error('A volume of that name exists (TM_ERR_ALREADY_EXISTS).'),
      501: error('This array cannot import (TM_ERR_UNSUPPORTED).'),
      503: error('The source cannot be reached (TM_ERR_UNAVAILABLE).'),
    },
    handler: async (request, imports) => {
      const body = request.body as Static<typeof StartBody>;
      return ok(await imports.start(body.name, body.source, body.writeBack ?? false, body.maxBytesPerSecond ?? null), 201);
    },
  },
  {
    method: 'GET', url: '/v1/imports', operationId: 'listImports', tag: 'imports',
    summary: 'Every import of the array, active or finished.',
    responses: { 200: { description: 'The imports.', schema: Type.Object({ imports: Type.Array(ImportStatusSchema) }) } },
    handler: async (_request, imports) => ok({ imports: imports.list() }),
  },
  {
    method: 'GET', url: '/v1/imports/:name', operationId: 'getImport', tag: 'imports',
    summary: 'One import: state, tracks left, rate, the source\'s health.',
    params: NameParams,
    responses: { 200: { description: 'The import.', schema: ImportStatusSchema }, 404: error('Not being imported (TM_ERR_NOT_FOUND).') },
    handler: async (request, imports) => ok(imports.show(param(request, 'name'))),
  },
  {
    method: 'POST', url: '/v1/imports/:name/finish', operationId: 'finishImport', tag: 'imports',
    summary: 'Lets the source go once every track is copied (with write-back, after flushing it).',
    params: NameParams,
    responses: {
      200: { description: 'The import.', schema: ImportStatusSchema },
      404: error('Not being imported (TM_ERR_NOT_FOUND).'),
      409: error('Not copied yet, or already finished (TM_ERR_INVALID_STATE).'),
      503: error('With write-back, the source cannot be flushed (TM_ERR_UNAVAILABLE).'),
    },
    handler: async (request, imports) => ok(await imports.finish(param(request, 'name'))),
  },
];
