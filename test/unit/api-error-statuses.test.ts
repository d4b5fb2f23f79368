// The route table documents its error responses by status; the server sends the status that
// httpStatusOf gives the error's code. This keeps the two from disagreeing: every documented error
// names its codes, and each code maps to the status it is listed under.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { API_ROUTES } from '../../src/adapters/http/all-routes.js';
import { httpStatusOf } from '../../src/adapters/http/error-status.js';
import { ErrorCode } from '../../src/core/errors.js';

const KNOWN = new Set<string>(Object.values(ErrorCode));

test('every documented error response names its codes, and httpStatusOf maps each to that status', () => {
  let checked = 0;
  for (const route of API_ROUTES) {
    for (const [status, spec] of Object.entries(route.responses)) {
      if (Number(status) < 400) continue;
      const codes = spec.description.match(/TM_ERR_[A-Z_]+/g) ?? [];
      assert.ok(codes.length > 0, `${route.operationId} ${status}: "${spec.description}" names no error code`);
      for (const code of codes) {
        assert.ok(KNOWN.has(code), `${route.operationId} ${status}: ${code} is not an error code`);
        assert.equal(httpStatusOf(code as ErrorCode), Number(status), `${route.operationId}: ${code} is sent as ${httpStatusOf(code as ErrorCode)}, documented as ${status}`);
        checked++;
      }
    }
  }
  assert.ok(checked >= API_ROUTES.length, `checked ${checked} documented codes`);
});
