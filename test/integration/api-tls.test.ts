// The API over HTTPS (`array start --tls-cert --tls-key`) with certificates made by openssl: the
// CLI verifies the array against --ca (or TIDEMARK_CA_FILE) and refuses it without, plain HTTP to
// the port gets nowhere, the token is still required, and a bad certificate setup stops the start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

let fixture: DaemonFixture;
let daemon: DaemonProcess;
let pki: { ca: string; cert: string; key: string; otherKey: string };

async function makePki(dir: string): Promise<typeof pki> {
  const at = (name: string): string => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await mustRun('openssl', ['req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '2', '-subj', '/CN=tidemark test CA']);
  await mustRun('openssl', ['req', ...ec, '-keyout', at('server.key'), '-out', at('server.csr'), '-subj', '/CN=array.test']);
  await writeFile(at('san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await mustRun('openssl', ['x509', '-req', '-in', at('server.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-set_serial', '1',
    '-days', '2', '-extfile', at('san.cnf'), '-out', at('server.pem')]);
  await mustRun('openssl', ['req', '-x509', ...ec, '-keyout', at('other.key'), '-out', at('other.pem'), '-days', '2', '-subj', '/CN=other']);
  return { ca: at('ca.pem'), cert: at('server.pem'), key: at('server.key'), otherKey: at('other.key') };
}

before(async () => {
  fixture = await DaemonFixture.create();
  pki = await makePki(fixture.dir);
  daemon = await fixture.start(undefined, ['--tls-cert', pki.cert, '--tls-key', pki.key]);
});
after(async () => {
  await fixture.cleanup();
});

const cli = (args: string[], env: Record<string, string> = {}) => {
  const { TIDEMARK_CA_FILE: _c, TIDEMARK_TOKEN: _t, TIDEMARK_TOKEN_FILE: _f, ...rest } = process.env;
  void _c; void _t; void _f;
  return runCommand(tidemarkBin, args, 30_000, { ...rest, ...env });
};

test('the CLI talks HTTPS to the array when it can verify it with --ca or TIDEMARK_CA_FILE', { timeout: 60_000 }, async () => {
  assert.match(daemon.apiUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
  const created = await cli([...daemon.cliArgs, '--ca', pki.ca, '--json', 'volume', 'create', 'secure', '--size', '1MiB']);
  assert.equal(created.code, 0, created.stderr);
  const listed = await cli([...daemon.cliArgs, '--json', 'volume', 'list'], { TIDEMARK_CA_FILE: pki.ca });
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual((JSON.parse(listed.stdout) as { volumes: Array<{ name: string }> }).volumes.map((v) => v.name), ['secure']);
  // By name too: the certificate is for localhost as well.
  const byName = await cli(['--array', daemon.apiUrl.replace('127.0.0.1', 'localhost'), '--token-file', daemon.tokenFile, '--ca', pki.ca, 'volume', 'list']);
  assert.equal(byName.code, 0, byName.stderr);
});

test('without the CA, with plain HTTP, or without the token, nothing gets through', { timeout: 60_000 }, async () => {
  const unverified = await cli([...daemon.cliArgs, 'volume', 'delete', 'secure']);
  assert.equal(unverified.code, 1);
  assert.match(unverified.stderr, /cannot reach the array at https:.*could not be verified: give its CA with --ca FILE.*\[TM_ERR_UNAVAILABLE\]/);
  const plain = await cli(['--array', daemon.apiUrl.replace('https:', 'http:'), '--token-file', daemon.tokenFile, 'volume', 'delete', 'secure']);
  assert.equal(plain.code, 1, plain.stdout);
  assert.match(plain.stderr, /if the array serves HTTPS, use an https:\/\/ URL/);
  const notCa = await cli([...daemon.cliArgs, '--ca', daemon.tokenFile, 'volume', 'list']);
  assert.equal(notCa.code, 1);
  assert.match(notCa.stderr, /cannot use the CA file .*no PEM certificate/);

  const ca = await readFile(pki.ca);
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(`${daemon.apiUrl}/v1/volumes`, { ca }, (res) => { res.resume(); resolve(res.statusCode!); });
    req.on('error', reject);
    req.end();
  });
  assert.equal(status, 401);
  const still = await cli([...daemon.cliArgs, '--ca', pki.ca, '--json', 'volume', 'list']);
  assert.deepEqual((JSON.parse(still.stdout) as { volumes: Array<{ name: string }> }).volumes.map((v) => v.name), ['secure']);
});

test('a bad certificate setup stops the start with a clear message', { timeout: 60_000 }, async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--tls-cert', pki.cert], /--tls-cert and --tls-key go together/],
    [['--tls-cert', pki.cert, '--tls-key', pki.otherKey], /cannot be used together/],
    [['--tls-cert', join(fixture.dir, 'missing.pem'), '--tls-key', pki.key], /cannot read the TLS certificate .*missing\.pem/],
    [['--tls-cert', fixture.dir, '--tls-key', pki.key], /cannot read the TLS certificate .*not a regular file/],
  ];
  for (const [args, message] of cases) {
    const result = await fixture.spawnDaemon(join(fixture.dir, 'bad-tls'), args).done;
    assert.equal(result.code, 1, args.join(' '));
    assert.match(result.output, message);
  }
});
