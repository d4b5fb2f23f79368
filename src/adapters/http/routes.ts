// The HTTP API as a table: one entry per operation with its schemas and handler. The server
// registers the table and the OpenAPI document is generated from it.
import type { Static } from '@sinclair/typebox';
import {
  ArrayInfoSchema, ChangesQuery, ChangesSchema, CreateVolumeBody, DEFAULT_CHANGE_RUNS, DeletedSchema,
  SetAccessBody, SetStateBody, VolumeListSchema, VolumeNameParams, VolumeSchema, type Changes,
} from './schemas.js';
import type { ApiBackend, ChangeBitmap } from './types.js';
import type { VolumeState } from '../../core/volume/state.js';
import { errorResponse as error, ok, type RouteSpec } from './route-kit.js';

const nameOf = (request: { params: unknown }): string => (request.params as Static<typeof VolumeNameParams>).name;

/** Runs of set tracks from `fromTrack`, at most `maxRuns`; `nextTrack` says where to resume. */
export function collectRuns(bitmap: ChangeBitmap, trackCount: number, fromTrack: number, maxRuns: number):
  Pick<Changes, 'runs' | 'nextTrack'> {
  const runs: Changes['runs'] = [];
  let at = fromTrack < trackCount ? bitmap.nextSet(fromTrack) : -1;
  while (at !== -1) {
    if (runs.length === maxRuns) return { runs, nextTrack: at };
    const clear = bitmap.nextClear(at);
    const end = clear === -1 ? trackCount : clear;
    runs.push({ start: at, end });
    at = end < trackCount ? bitmap.nextSet(end) : -1;
  }
  return { runs, nextTrack: null };
}

function changesOf(backend: ApiBackend, name: string, query: Static<typeof ChangesQuery>): Changes {
  const { trackBytes, trackCount, bitmap } = backend.changeTracker(name);
  return {
    volume: name, trackBytes, trackCount,
    changedTracks: bitmap.count(),
    ...collectRuns(bitmap, trackCount, query.fromTrack ?? 0, query.maxRuns ?? DEFAULT_CHANGE_RUNS),
  };
}

export const ROUTES: readonly RouteSpec<ApiBackend>[] = [
  {
    method: 'GET', url: '/v1/array', operationId: 'getArray', tag: 'array',
    summary: 'The array: name, version, uptime, listening addresses, volume count.',
    responses: { 200: { description: 'The array.', schema: ArrayInfoSchema } },
    handler: async (_request, backend) => ok(backend.info()),
  },
  {
    method: 'GET', url: '/v1/volumes', operationId: 'listVolumes', tag: 'volumes',
    summary: 'Every volume, sorted by name.',
    responses: { 200: { description: 'The volumes.', schema: VolumeListSchema } },
    handler: async (_request, backend) => ok({ volumes: backend.volumeNames().map((n) => backend.summary(n)) }),
  },
  {
    method: 'POST', url: '/v1/volumes', operationId: 'createVolume', tag: 'volumes',
    summary: 'Creates a volume (a sparse file; no space is allocated until written).',
    body: CreateVolumeBody,
    responses: {
      201: { description: 'The new volume.', schema: VolumeSchema },
      400: error('Bad name, size or track size (TM_ERR_INVALID_ARGUMENT).'),
      409: error('A volume with that name exists (TM_ERR_ALREADY_EXISTS).'),
    },
    handler: async (request, backend) => {
      const body = request.body as Static<typeof CreateVolumeBody>;
      return ok(await backend.createVolume(body.name, body.sizeBytes, body.trackBytes), 201);
    },
  },
  {
    method: 'GET', url: '/v1/volumes/:name', operationId: 'getVolume', tag: 'volumes',
    summary: 'One volume.',
    params: VolumeNameParams,
    responses: {
      200: { description: 'The volume.', schema: VolumeSchema },
      404: error('No such volume (TM_ERR_NOT_FOUND).'),
    },
    handler: async (request, backend) => ok(backend.summary(nameOf(request))),
  },
  {
    method: 'DELETE', url: '/v1/volumes/:name', operationId: 'deleteVolume', tag: 'volumes',
    summary: 'Deletes a volume and its data. Refused while any NBD client has it open.',
    params: VolumeNameParams,
    responses: {
      200: { description: 'Deleted.', schema: DeletedSchema },
      404: error('No such volume (TM_ERR_NOT_FOUND).'),
      409: error('The volume is exported or busy (TM_ERR_VOLUME_BUSY).'),
    },
    handler: async (request, backend) => {
      const name = nameOf(request);
      await backend.deleteVolume(name);
      return ok({ name, deleted: true });
    },
  },
  {
    method: 'PUT', url: '/v1/volumes/:name/state', operationId: 'setVolumeState', tag: 'volumes',
    summary: 'Sets host access: ready, write-disabled or not-ready. Takes effect on the next NBD request.',
    params: VolumeNameParams,
    body: SetStateBody,
    responses: {
      200: { description: 'The volume in its new state.', schema: VolumeSchema },
      400: error('Unknown state (TM_ERR_INVALID_ARGUMENT).'),
      404: error('No such volume (TM_ERR_NOT_FOUND).'),
    },
    handler: async (request, backend) => {
      const { state } = request.body as { state: VolumeState };
      return ok(await backend.setVolumeState(nameOf(request), state));
    },
  },
  {
    method: 'PUT', url: '/v1/volumes/:name/access', operationId: 'setVolumeAccess', tag: 'volumes',
    summary: 'Limits NBD access to clients whose verified TLS certificate names one of allowedClients; [] allows any client.',
    params: VolumeNameParams,
    body: SetAccessBody,
    responses: {
      200: { description: 'The volume with its new allow-list.', schema: VolumeSchema },
      400: error('A bad client name or too many (TM_ERR_INVALID_ARGUMENT).'),
      404: error('No such volume (TM_ERR_NOT_FOUND).'),
    },
    handler: async (request, backend) => {
      const { allowedClients } = request.body as { allowedClients: string[] };
      return ok(await backend.setVolumeAccess(nameOf(request), allowedClients));
    },
  },
  {
    method: 'GET', url: '/v1/volumes/:name/changes', operationId: 'getVolumeChanges', tag: 'changes',
    summary: 'Tracks changed since the change tracker was last reset, as runs of track indexes.',
    params: VolumeNameParams,
    querystring: ChangesQuery,
    responses: {
      200: { description: 'The changed tracks.', schema: ChangesSchema },
      404: error('No such volume (TM_ERR_NOT_FOUND).'),
    },
    handler: async (request, backend) => ok(changesOf(backend, nameOf(request), request.query as Static<typeof ChangesQuery>)),
  },
  {
    method: 'POST', url: '/v1/volumes/:name/changes/reset', operationId: 'resetVolumeChanges', tag: 'changes',
    summary: 'Starts a new change interval. Returns the changes as they stood at the reset, atomically: ' +
      'no write falls between what is returned and what the next interval records.',
    params: VolumeNameParams,
    querystring: ChangesQuery,
    responses: {
      200: { description: 'The changed tracks up to the reset.', schema: ChangesSchema },
      404: error('No such volume (TM_ERR_NOT_FOUND).'),
    },
    handler: async (request, backend) => {
      const name = nameOf(request);
      const snapshot = changesOf(backend, name, request.query as Static<typeof ChangesQuery>);
      // No await between the snapshot and the clear: nothing can write in between.
      await backend.resetChanges(name);
      return ok(snapshot);
    },
  },
  {
    method: 'GET', url: '/metrics', operationId: 'getMetrics', tag: 'operations', public: true,
    summary: 'Prometheus metrics (text exposition format).',
    responses: { 200: { description: 'Metrics.', contentType: 'text/plain; version=0.0.4; charset=utf-8' } },
    handler: async (_request, backend) => {
      const { contentType, body } = await backend.metrics();
      return { status: 200, body, contentType };
    },
  },
];
