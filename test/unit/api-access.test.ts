// The API's access decision on its own: Host names (ports, brackets, case, trailing dots, names that
// merely contain a served one), the Authorization header's forms, scopes and content types.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkAccess, hostName, isServedHost, type AccessRequest, type ApiAccessPolicy } from '../../src/adapters/http/api-access.js';

const policy: ApiAccessPolicy = {
  tokens: [{ token: 'admin-token', scope: 'admin' }, { token: 'read-token', scope: 'read' }],
  hosts: new Set(['array1.example']),
};
const request = (over: Partial<AccessRequest>): AccessRequest => ({
  method: 'GET', host: '127.0.0.1:7480', authorization: 'Bearer admin-token', contentType: undefined, isPublic: false, ...over,
});
const code = (over: Partial<AccessRequest>): string | undefined => checkAccess(request(over), policy)?.code;

test('host names are read without port, brackets, case or a trailing dot', () => {
  assert.equal(hostName('Array1.Example:7480'), 'array1.example');
  assert.equal(hostName('[::1]:7480'), '::1');
  assert.equal(hostName('[fe80::1%25eth0]'), 'fe80::1%25eth0');
  assert.equal(hostName('localhost.'), 'localhost');
  assert.equal(hostName('10.0.0.5'), '10.0.0.5');
});

test('served hosts: IP literals, localhost forms, the listed names; nothing that only contains them', () => {
  const hosts = policy.hosts;
  for (const served of ['127.0.0.1:7480', '10.1.2.3', '[::1]:7480', '[2001:db8::1]', 'localhost', 'LOCALHOST:1', 'a.b.localhost',
    'array1.example', 'ARRAY1.EXAMPLE.:7480', undefined]) {
    assert.equal(isServedHost(served, hosts), true, String(served));
  }
  for (const foreign of ['evil.example', 'array1.example.evil.example', 'evil-array1.example', 'localhost.evil.example', '127.0.0.1.nip.io',
    '0x7f000001', '', ' ']) {
    assert.equal(isServedHost(foreign, hosts), false, foreign);
  }
  assert.equal(isServedHost('anything.example', new Set(['*'])), true);
});

test('tokens: the scheme is case-insensitive, anything else about the header is exact', () => {
  assert.equal(code({}), undefined);
  assert.equal(code({ authorization: 'bearer admin-token' }), undefined);
  assert.equal(code({ authorization: 'Bearer  admin-token ' }), undefined);
  for (const authorization of [undefined, '', 'Bearer', 'Bearer ', 'admin-token', 'Basic admin-token', 'Bearer admin-token x',
    'Bearer admin-tokenx', 'Bearer admin-toke', 'Bearer ADMIN-TOKEN']) {
    assert.equal(code({ authorization }), 'TM_ERR_UNAUTHORIZED', String(authorization));
  }
  assert.equal(code({ authorization: undefined, isPublic: true }), undefined);
  assert.equal(code({ authorization: undefined, isPublic: true, host: 'evil.example' }), 'TM_ERR_FORBIDDEN');
  assert.equal(checkAccess(request({ authorization: 'Bearer x' }), { tokens: [], hosts: new Set() })?.code, 'TM_ERR_UNAUTHORIZED');
});

test('scopes and content types', () => {
  const json = 'application/json';
  assert.equal(code({ method: 'POST', contentType: json }), undefined);
  assert.equal(code({ method: 'DELETE', contentType: 'Application/JSON; charset=utf-8' }), undefined);
  for (const contentType of [undefined, 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data', 'application/json-seq', 'application/jsonx']) {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) assert.equal(code({ method, contentType }), 'TM_ERR_UNSUPPORTED_MEDIA_TYPE', `${method} ${contentType}`);
  }
  assert.equal(code({ method: 'GET', authorization: 'Bearer read-token' }), undefined);
  assert.equal(code({ method: 'HEAD', authorization: 'Bearer read-token' }), undefined);
  for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
    assert.equal(code({ method, authorization: 'Bearer read-token', contentType: json }), 'TM_ERR_FORBIDDEN', method);
  }
  // Host first: a foreign page learns nothing, not even whether its token guess was right.
  assert.equal(code({ host: 'evil.example', authorization: undefined }), 'TM_ERR_FORBIDDEN');
});
