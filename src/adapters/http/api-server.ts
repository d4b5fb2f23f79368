// The HTTP API server: fastify with the route table, TypeBox validation, one error shape.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import { errorBody, httpStatusOf, toTidemarkError } from './error-status.js';
import { renderOpenApi } from './openapi.js';
import type { RouteSpec } from './route-kit.js';
import { API_ROUTES, API_SCHEMAS } from './all-routes.js';
import type { ApiBackend, ApiLogger } from './types.js';
import { compileValidator, type RequestPart, type Validator } from './validation.js';
import { checkAccess, type ApiAccessPolicy } from './api-access.js';
import { DASHBOARD_HEADERS, DASHBOARD_PATHS, acceptsGzip, loadDashboard } from './dashboard-files.js';

export interface ApiServerOptions {
  readonly backend: ApiBackend;
  readonly logger: ApiLogger;
  readonly host: string;
  readonly port: number;
  readonly version: string;
  /** Tokens and Host names; every request but those to public routes needs a token. */
  readonly access: ApiAccessPolicy;
  /** Serve HTTPS with this certificate (PEM, chain included) and key instead of plain HTTP. */
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer } | undefined;
  /** The built dashboard (dist/ui), served at `/`; without it `/` says how to build it. */
  readonly dashboardDir?: string | undefined;
}

/** A request run in-process against this array's own API (a routed command from a peer). */
export interface InjectedRequest {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Path and query string. */
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Uint8Array | undefined;
}

export interface InjectedReply {
  readonly status: number;
  readonly contentType: string;
  readonly body: Uint8Array;
}

export interface ApiServer {
  readonly address: { host: string; port: number };
  /**
   * Runs a request through the same hooks, validation, handlers and error mapping as one from the
   * network (fastify inject), so a routed command behaves exactly like a direct one.
   */
  inject(request: InjectedRequest): Promise<InjectedReply>;
  close(): Promise<void>;
}

/** Management requests are small; anything bigger is a mistake or an attack. */
const BODY_LIMIT_BYTES = 64 * 1024;
const REQUEST_TIMEOUT_MS = 60_000;

function register(app: FastifyInstance, route: RouteSpec<ApiBackend>, backend: ApiBackend): void {
  const validators: Partial<Record<RequestPart, Validator>> = {};
  if (route.params) validators.params = compileValidator(route.params, 'params');
  if (route.querystring) validators.querystring = compileValidator(route.querystring, 'querystring');
  if (route.body) validators.body = compileValidator(route.body, 'body');
  const response: Record<number, unknown> = {};
  for (const [status, spec] of Object.entries(route.responses)) if (spec.schema) response[Number(status)] = spec.schema;
  app.route({
    method: route.method,
    url: route.url,
    config: { public: route.public === true },
    schema: {
      ...(route.params ? { params: route.params } : {}),
      ...(route.querystring ? { querystring: route.querystring } : {}),
      ...(route.body ? { body: route.body } : {}),
      response,
    },
    validatorCompiler: ({ httpPart }) => {
      const validator = validators[httpPart as RequestPart];
      if (!validator) throw new Error(`no validator for ${route.url} ${httpPart}`);
      return validator;
    },
    handler: async (request, reply) => {
      const result = await route.handler({ params: request.params, query: request.query, body: request.body, method: request.method, url: request.url }, backend);
      reply.code(result.status);
      if (result.contentType) reply.type(result.contentType);
      if (result.headers) void reply.headers(result.headers);
      return result.body;
    },
  });
}

/** The dashboard's page and assets: public (no token; they hold no data), Host still checked. */
async function registerDashboard(app: FastifyInstance, dir: string | undefined): Promise<void> {
  const loaded = dir === undefined ? { missing: 'this array serves no dashboard' } : await loadDashboard(dir);
  for (const path of DASHBOARD_PATHS) {
    app.get(path, { config: { public: true } }, async (request, reply) => {
      if ('missing' in loaded) {
        return reply.code(404).type('application/json').send(errorBody(new TidemarkError(ErrorCode.NotFound, loaded.missing)));
      }
      const file = loaded.files.get(path)!;
      void reply.headers(DASHBOARD_HEADERS).header('etag', file.etag).type(file.contentType);
      if (request.headers['if-none-match'] === file.etag) return reply.code(304).send();
      if (acceptsGzip(request.headers['accept-encoding'])) return reply.header('content-encoding', 'gzip').send(file.gzip);
      return reply.send(file.body);
    });
  }
}

export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const { backend, logger } = options;
  const accessRefusal = (request: FastifyRequest, isPublic: boolean): TidemarkError | undefined => checkAccess({
    method: request.method,
    host: request.headers.host,
    authorization: request.headers.authorization,
    contentType: request.headers['content-type'],
    isPublic,
  }, options.access);
  const common = {
    logger: false, bodyLimit: BODY_LIMIT_BYTES, requestTimeout: REQUEST_TIMEOUT_MS, return503OnClosing: true,
    // A URL fastify cannot route (bad percent-encoding, an over-long parameter) is answered before
    // any hook: without this it got fastify's own error shape, and without the token check.
    frameworkErrors: (error: Error, request: FastifyRequest, reply: FastifyReply): void => {
      const tm = accessRefusal(request, false) ?? toTidemarkError(error);
      if (tm.code === ErrorCode.Unauthorized) void reply.header('www-authenticate', 'Bearer realm="tidemark"');
      void reply.code(httpStatusOf(tm.code)).type('application/json').send(errorBody(tm));
    },
  } as const;
  // One code path for both: the routes and hooks do not care which server carries them.
  const app: FastifyInstance = options.tls
    ? Fastify({ ...common, https: { cert: options.tls.cert, key: options.tls.key, minVersion: 'TLSv1.2' } }) as unknown as FastifyInstance
    : Fastify(common);
  app.setErrorHandler((error, request, reply) => {
    const tm = toTidemarkError(error);
    const status = httpStatusOf(tm.code);
    if (status >= 500) logger.error({ method: request.method, url: request.url, code: tm.code, err: tm.message }, 'api request failed');
    else logger.debug({ method: request.method, url: request.url, code: tm.code }, 'api request refused');
    void reply.code(status).type('application/json').send(errorBody(tm));
  });
  // Before routing and before the body is read: refused requests cost nothing and change nothing.
  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config as { public?: boolean } | undefined;
    const refusal = accessRefusal(request, config?.public === true);
    if (refusal === undefined) return;
    logger.info({ method: request.method, url: request.url.split('?')[0], remote: request.ip, code: refusal.code }, 'api request refused');
    if (refusal.code === ErrorCode.Unauthorized) void reply.header('www-authenticate', 'Bearer realm="tidemark"');
    return reply.code(httpStatusOf(refusal.code)).type('application/json').send(errorBody(refusal));
  });
  // A mutating request carries Content-Type: application/json even when it has nothing to say
  // (DELETE, a reset): an empty body is no body, not a JSON syntax error.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, text, done) => {
    if (text.length === 0) done(null, undefined);
    else parseJson(request, text as string, done);
  });
  app.setNotFoundHandler((request, reply) => {
    const tm = new TidemarkError(ErrorCode.NotFound, `no API route ${request.method} ${request.url.split('?')[0]}`);
    void reply.code(404).send(errorBody(tm));
  });
  for (const route of API_ROUTES) register(app, route, backend);
  await registerDashboard(app, options.dashboardDir);
  const openapi = renderOpenApi(API_ROUTES, API_SCHEMAS, options.version);
  app.get('/openapi.json', async (_request, reply) => reply.type('application/json').send(openapi));

  await app.listen({ host: options.host, port: options.port });
  const bound = app.server.address();
  if (bound === null || typeof bound !== 'object') throw new Error('API server has no TCP address');
  return {
    address: { host: bound.address, port: bound.port },
    inject: async (request) => {
      const response = await app.inject({
        method: request.method, url: request.url, headers: { ...request.headers },
        ...(request.body !== undefined ? { payload: Buffer.from(request.body) } : {}),
      });
      const type = response.headers['content-type'];
      return { status: response.statusCode, contentType: typeof type === 'string' ? type : '', body: response.rawPayload };
    },
    close: () => app.close(),
  };
}
