// The OpenAPI 3.1 document, generated from the route table and its schemas. docs/api/openapi.json
// is this output committed; a test compares the two so the document cannot fall behind the server.
import type { TSchema } from '@sinclair/typebox';
import type { RouteSpec } from './route-kit.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Plain JSON (drops TypeBox's symbol keys). */
const plain = (schema: TSchema): Json => JSON.parse(JSON.stringify(schema)) as Json;

type Named = ReadonlyMap<string, string>;

const namesByText = (schemas: Readonly<Record<string, TSchema>>): Named =>
  new Map(Object.entries(schemas).map(([name, schema]) => [JSON.stringify(plain(schema)), name]));

/** Replaces every sub-schema equal to a named one by a $ref, except at the root of the named one itself. */
function withRefs(value: Json, named: Named, self?: string): Json {
  if (Array.isArray(value)) return value.map((v) => withRefs(v, named));
  if (value === null || typeof value !== 'object') return value;
  const name = named.get(JSON.stringify(value));
  if (name !== undefined && name !== self) return { $ref: `#/components/schemas/${name}` };
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withRefs(v, named)]));
}

function parametersOf(route: RouteSpec<never>, named: Named): Json[] {
  const out: Json[] = [];
  const add = (schema: TSchema | undefined, where: 'path' | 'query'): void => {
    if (!schema) return;
    const s = plain(schema) as { properties?: Record<string, Json>; required?: string[] };
    for (const [key, property] of Object.entries(s.properties ?? {})) {
      const { description, ...rest } = property as { description?: string } & Record<string, Json>;
      // Fastify names a trailing wildcard `*`; the document calls it `path` (see buildOpenApiDocument).
      const name = key === '*' ? 'path' : key;
      out.push({
        name, in: where, required: where === 'path' || (s.required ?? []).includes(name),
        ...(description === undefined ? {} : { description }),
        schema: withRefs(rest, named),
      });
    }
  };
  add(route.params, 'path');
  add(route.querystring, 'query');
  return out;
}

function operationOf(route: RouteSpec<never>, named: Named): Json {
  const schemaRef = (schema: TSchema): Json => withRefs(plain(schema), named);
  const responses: Record<string, Json> = {};
  for (const [status, spec] of Object.entries(route.responses)) {
    const content: Json = spec.schema
      ? { 'application/json': { schema: schemaRef(spec.schema) } }
      : { [spec.contentType ?? 'text/plain']: { schema: { type: 'string' } } };
    responses[status] = { description: spec.description, content };
  }
  responses.default = { description: 'Any other error.', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  const parameters = parametersOf(route, named);
  return {
    operationId: route.operationId,
    summary: route.summary,
    tags: [route.tag],
    ...(route.public ? { security: [] } : {}),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(route.body ? { requestBody: { required: true, content: { 'application/json': { schema: schemaRef(route.body) } } } } : {}),
    responses,
  };
}

export function buildOpenApiDocument(routes: readonly RouteSpec<never>[], schemas: Readonly<Record<string, TSchema>>, version: string): Json {
  const named = namesByText(schemas);
  const paths: Record<string, Record<string, Json>> = {};
  for (const route of routes) {
    const path = route.url.replace(/:([A-Za-z]+)/g, '{$1}').replace(/\/\*$/, '/{path}');
    (paths[path] ??= {})[route.method.toLowerCase()] = operationOf(route, named);
  }
  paths['/openapi.json'] = {
    get: {
      operationId: 'getOpenApi', summary: 'This document.', tags: ['operations'],
      responses: {
        200: { description: 'The OpenAPI document.', content: { 'application/json': { schema: { type: 'object' } } } },
        401: { description: 'No bearer token, or not this array\'s token (TM_ERR_UNAUTHORIZED).', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
    },
  };
  return {
    openapi: '3.1.0',
    info: {
      title: 'tidemark array API',
      version,
      description: 'Manage one tidemark array: its volumes, their states and change tracking. ' +
        'Errors are {"error":{"code","message","details"}} with a stable TM_ERR_* code. ' +
        'Every operation but getMetrics needs "Authorization: Bearer TOKEN" with the token the array wrote to ' +
        'DATA/api-token (DATA/api-token.read allows GET only); a Host header naming a host the array does not serve ' +
        'is refused, and so is a POST, PUT or DELETE whose Content-Type is not application/json (see docs/security.md).',
    },
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'The contents of DATA/api-token (or DATA/api-token.read: GET only).' },
      },
      schemas: Object.fromEntries(Object.entries(schemas).map(([name, schema]) => [name, withRefs(plain(schema), named, name)])),
    },
  };
}

/** The committed file's exact text. */
export const renderOpenApi = (routes: readonly RouteSpec<never>[], schemas: Readonly<Record<string, TSchema>>, version: string): string =>
  `${JSON.stringify(buildOpenApiDocument(routes, schemas, version), null, 2)}\n`;
