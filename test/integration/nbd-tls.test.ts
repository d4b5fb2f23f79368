// NBD over TLS on real daemons with real clients and openssl-made certificates: with
// `--nbd-tls require` plain-text qemu-io and nbdinfo are refused while qemu-io (tls-creds-x509),
// nbdinfo and nbdcopy (nbds://) work; with `--tls-ca` a volume's allow-list admits the client
// certificate named on it and refuses others, and the list survives kill -9.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DaemonFixture, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';
import { missingTools, requirement } from '../helpers/requirement.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { connect as tlsConnect } from 'node:tls';

const skip = requirement(missingTools(['openssl', 'qemu-io', 'nbdinfo', 'nbdcopy']));
const MiB = 1024 * 1024;

let fixture: DaemonFixture;
/** --nbd-tls require, no client certificates. */
let forced: DaemonProcess;
/** --nbd-tls require --tls-ca: client certificates required, allow-lists apply. */
let verifying: DaemonProcess;
let pki: { dir: string; ca: string; cert: string; key: string; anonymous: string; hostA: string; hostB: string; untrusted: string };

/** A CA, the server's certificate (IP 127.0.0.1), and client credential directories in the layout qemu and libnbd read. */
async function makePki(dir: string): Promise<typeof pki> {
  const at = (name: string): string => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const sign = async (name: string, subject: string, ext: string, ca = 'ca'): Promise<void> => {
    await mustRun('openssl', ['req', ...ec, '-keyout', at(`${name}.key`), '-out', at(`${name}.csr`), '-subj', subject]);
    await writeFile(at(`${name}.cnf`), ext);
    await mustRun('openssl', ['x509', '-req', '-in', at(`${name}.csr`), '-CA', at(`${ca}.pem`), '-CAkey', at(`${ca}.key`),
      '-set_serial', String(Date.now() % 1e9), '-days', '2', '-extfile', at(`${name}.cnf`), '-out', at(`${name}.pem`)]);
  };
  const caExt = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'];
  await mustRun('openssl', ['req', '-x509', ...ec, ...caExt, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '2', '-subj', '/CN=tidemark test CA']);
  await mustRun('openssl', ['req', '-x509', ...ec, ...caExt, '-keyout', at('rogue.key'), '-out', at('rogue.pem'), '-days', '2', '-subj', '/CN=rogue CA']);
  await sign('server', '/CN=array.test', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n');
  const clientDir = async (name: string, withCert?: { cn: string; san: string; ca?: string }): Promise<string> => {
    const d = at(`client-${name}`);
    await mkdir(d, { recursive: true });
    await copyFile(at('ca.pem'), join(d, 'ca-cert.pem'));
    if (withCert) {
      await sign(name, `/CN=${withCert.cn}`, `subjectAltName=${withCert.san}\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n`, withCert.ca);
      await copyFile(at(`${name}.pem`), join(d, 'client-cert.pem'));
      await copyFile(at(`${name}.key`), join(d, 'client-key.pem'));
    }
    return d;
  };
  return {
    dir, ca: at('ca.pem'), cert: at('server.pem'), key: at('server.key'),
    anonymous: await clientDir('anonymous'),
    hostA: await clientDir('host-a', { cn: 'host-a', san: 'DNS:host-a.example.com' }),
    hostB: await clientDir('host-b', { cn: 'host-b', san: 'DNS:host-b.example.com' }),
    untrusted: await clientDir('untrusted', { cn: 'host-a', san: 'DNS:host-a.example.com', ca: 'rogue' }),
  };
}

before(async () => {
  if (skip) return;
  fixture = await DaemonFixture.create();
  pki = await makePki(fixture.dir);
  const tls = ['--tls-cert', pki.cert, '--tls-key', pki.key];
  forced = await fixture.start(undefined, [...tls, '--nbd-tls', 'require']);
  verifying = await fixture.start(join(fixture.dir, 'verifying'), [...tls, '--nbd-tls', 'require', '--tls-ca', pki.ca]);
  for (const d of [forced, verifying]) await cli(d, ['volume', 'create', 'vol', '--size', '64MiB']);
});
after(async () => {
  await fixture?.cleanup();
});

async function cli(d: DaemonProcess, args: string[]): Promise<string> {
  return mustRun(tidemarkBin, [...d.cliArgs, '--ca', pki.ca, ...args]);
}

/** qemu-io over TLS with the credentials in `dir` (tls-creds-x509, endpoint=client). */
function qemuTls(d: DaemonProcess, dir: string, commands: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runCommand('qemu-io', [
    '--object', `tls-creds-x509,id=tls0,dir=${dir},endpoint=client`,
    '--image-opts', ...commands.flatMap((c) => ['-c', c]),
    `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${d.nbdPort},export=vol,tls-creds=tls0`,
  ], 60_000);
}

const nbds = (d: DaemonProcess, dir: string, volume = 'vol'): string =>
  `nbds://127.0.0.1:${d.nbdPort}/${volume}?tls-certificates=${dir}`;

test('--nbd-tls require: plain-text qemu-io and nbdinfo are refused; the daemon keeps serving', { skip, timeout: 120_000 }, async () => {
  const plainQemu = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', forced.uri('vol')], 60_000);
  assert.notEqual(plainQemu.code, 0, plainQemu.stdout);
  assert.match(plainQemu.stderr, /TLS/i, 'qemu names TLS as what is missing');
  const plainInfo = await runCommand('nbdinfo', [forced.uri('vol')], 60_000);
  assert.notEqual(plainInfo.code, 0, plainInfo.stdout);
  // libnbd 1.14 reports NBD_REP_ERR_TLS_REQD as ENOTSUP; its debug trace carries the server's reason.
  assert.match(plainInfo.stderr, /opt_go request: Operation not supported/, plainInfo.stderr);
  const traced = await runCommand('nbdinfo', [forced.uri('vol')], 60_000, { ...process.env, LIBNBD_DEBUG: '1' });
  assert.match(traced.stderr, /this server requires TLS: use STARTTLS first/);
  // The Unix socket is no back door.
  const plainUnix = await runCommand('nbdinfo', [forced.unixUri('vol')], 60_000);
  assert.notEqual(plainUnix.code, 0);
  const info = await mustRun('nbdinfo', ['--size', nbds(forced, pki.anonymous)]);
  assert.equal(info.trim(), String(64 * MiB));
});

test('qemu-io with tls-creds-x509 writes and reads back; nbdinfo and nbdcopy over nbds:// copy data in and out', { skip, timeout: 120_000 }, async () => {
  const written = await qemuTls(forced, pki.anonymous, ['write -P 0x5a 1M 2M', 'read -P 0x5a 1M 2M', 'flush']);
  assert.equal(written.code, 0, written.stderr + written.stdout);
  assert.doesNotMatch(written.stdout, /Pattern verification failed/);
  const again = await qemuTls(forced, pki.anonymous, ['read -P 0x5a 1M 2M', 'read -P 0 0 1M']);
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stdout, /Pattern verification failed/, 'a second connection reads what the first wrote');

  const info = JSON.parse(await mustRun('nbdinfo', ['--json', nbds(forced, pki.anonymous)])) as { exports: Array<{ 'export-size': number; 'tls': boolean }> };
  assert.equal(info.exports[0]!['export-size'], 64 * MiB);
  const source = join(fixture.dir, 'source.img');
  await writeFile(source, Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(MiB), randomBytes(MiB)]));
  await mustRun('nbdcopy', ['--flush', source, nbds(forced, pki.anonymous)]);
  const full = join(fixture.dir, 'full.img');
  await mustRun('nbdcopy', [nbds(forced, pki.anonymous), full]);
  const copied = await readFile(full);
  assert.equal(copied.length, 64 * MiB);
  assert.ok(copied.subarray(0, 5 * MiB).equals(await readFile(source)), 'what nbdcopy wrote over TLS reads back over TLS');
});

test('--tls-ca: a client without a certificate, or with one from another CA, is refused at the TLS handshake', { skip, timeout: 120_000 }, async () => {
  const anonymous = await runCommand('nbdinfo', ['--size', nbds(verifying, pki.anonymous)], 60_000);
  assert.notEqual(anonymous.code, 0, anonymous.stdout);
  const rogue = await runCommand('nbdinfo', ['--size', nbds(verifying, pki.untrusted)], 60_000);
  assert.notEqual(rogue.code, 0, rogue.stdout);
  const refusals = verifying.output().split('\n').filter((l) => /nbd client certificate refused|nbd TLS handshake failed/.test(l)).join('\n');
  // Without a certificate OpenSSL ends the handshake itself (peer did not return a certificate).
  // gnutls sends a certificate only if the server's list of acceptable CAs names its issuer, so both
  // the anonymous and the rogue-CA client end up here.
  assert.equal(refusals.split('\n').filter((l) => l.includes('nbd TLS handshake failed') && l.includes('peer did not return a certificate')).length, 2, refusals);
  // A client that sends its certificate anyway (OpenSSL does): the array's own check refuses it.
  const insistent = await RawNbdClient.connect(verifying.nbdPort);
  await insistent.greeting();
  insistent.sendOption(5);
  assert.equal((await insistent.optionReply()).type, 1, 'STARTTLS acknowledged');
  const secure = tlsConnect({
    socket: insistent.socket, ca: await readFile(pki.ca), checkServerIdentity: () => undefined,
    cert: await readFile(join(pki.untrusted, 'client-cert.pem')), key: await readFile(join(pki.untrusted, 'client-key.pem')),
  });
  const ended = await new Promise<string>((resolve) => {
    secure.once('error', (e) => resolve(`error ${e.message}`));
    secure.once('close', () => resolve('closed'));
  });
  assert.ok(ended, 'the connection ends');
  const own = verifying.output().split('\n').filter((l) => l.includes('nbd client certificate refused'));
  assert.equal(own.length, 1, verifying.output());
  assert.match(own[0]!, /"reason":"certificate of CN=host-a is not signed by a CA in --tls-ca"/);
  const good = await mustRun('nbdinfo', ['--size', nbds(verifying, pki.hostB)]);
  assert.equal(good.trim(), String(64 * MiB), 'no allow-list yet: any verified client');
});

test('volume set-access: the named client is served, another is refused with a log line; the list survives kill -9; --clear opens it', { skip, timeout: 180_000 }, async () => {
  const set = JSON.parse(await cli(verifying, ['--json', 'volume', 'set-access', 'vol', '--allow', 'host-a.example.com', 'db-7'])) as { allowedClients: string[] };
  assert.deepEqual(set.allowedClients, ['host-a.example.com', 'db-7']);

  const a = await qemuTls(verifying, pki.hostA, ['write -P 0xa1 0 64k', 'read -P 0xa1 0 64k']);
  assert.equal(a.code, 0, a.stderr);
  assert.doesNotMatch(a.stdout, /Pattern verification failed/);
  const b = await qemuTls(verifying, pki.hostB, ['read 0 4k']);
  assert.notEqual(b.code, 0, b.stdout);
  assert.match(b.stderr, /not available to this client/, 'qemu shows the server\'s reason');
  const bInfo = await runCommand('nbdinfo', ['--size', nbds(verifying, pki.hostB)], 60_000);
  assert.notEqual(bInfo.code, 0, bInfo.stdout);
  const log = verifying.output().split('\n').filter((l) => l.includes('not on the volume\'s allow-list'));
  assert.ok(log.length >= 2, 'each refusal is logged');
  assert.match(log[0]!, /"volume":"vol"/);
  assert.match(log[0]!, /host-b/, 'the log names the refused client');

  // kill -9 and restart: the allow-list is part of the volume record.
  await verifying.stop('SIGKILL');
  const tls = ['--tls-cert', pki.cert, '--tls-key', pki.key, '--nbd-tls', 'require', '--tls-ca', pki.ca];
  verifying = await fixture.start(verifying.dataDir, tls);
  const shown = JSON.parse(await cli(verifying, ['--json', 'volume', 'show', 'vol'])) as { allowedClients: string[] };
  assert.deepEqual(shown.allowedClients, ['host-a.example.com', 'db-7']);
  const bAgain = await qemuTls(verifying, pki.hostB, ['read 0 4k']);
  assert.notEqual(bAgain.code, 0, 'still refused after the restart');
  const aAgain = await qemuTls(verifying, pki.hostA, ['read -P 0xa1 0 64k']);
  assert.equal(aAgain.code, 0, aAgain.stderr);
  assert.doesNotMatch(aAgain.stdout, /Pattern verification failed/);

  const cleared = JSON.parse(await cli(verifying, ['--json', 'volume', 'set-access', 'vol', '--clear'])) as { allowedClients: string[] };
  assert.deepEqual(cleared.allowedClients, []);
  const bOpen = await qemuTls(verifying, pki.hostB, ['read -P 0xa1 0 64k']);
  assert.equal(bOpen.code, 0, bOpen.stderr);
});

test('set-access: bad input is refused with a clear error and changes nothing', { skip, timeout: 60_000 }, async () => {
  const bin = tidemarkBin;
  const neither = await runCommand(bin, [...verifying.cliArgs, '--ca', pki.ca, 'volume', 'set-access', 'vol'], 30_000);
  assert.equal(neither.code, 1);
  assert.match(neither.stderr, /give either --allow NAME… or --clear/);
  const control = await runCommand(bin, [...verifying.cliArgs, '--ca', pki.ca, 'volume', 'set-access', 'vol', '--allow', 'bad\u0001name'], 30_000);
  assert.equal(control.code, 1);
  assert.match(control.stderr, /invalid client name/);
  const missing = await runCommand(bin, [...verifying.cliArgs, '--ca', pki.ca, 'volume', 'set-access', 'nope', '--allow', 'x'], 30_000);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /TM_ERR_NOT_FOUND/);
  const shown = JSON.parse(await cli(verifying, ['--json', 'volume', 'show', 'vol'])) as { allowedClients: string[] };
  assert.deepEqual(shown.allowedClients, []);
});

test('a bad NBD TLS setup stops the start with a clear message', { skip, timeout: 60_000 }, async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--nbd-tls', 'require'], /--nbd-tls require needs the certificate and key/],
    [['--nbd-tls', 'sometimes'], /--nbd-tls must be one of off, optional, require/],
    [['--tls-cert', pki.cert, '--tls-key', pki.key, '--tls-ca', pki.ca], /--tls-ca .* needs --nbd-tls/],
    [['--tls-cert', pki.cert, '--tls-key', pki.key, '--nbd-tls', 'optional', '--tls-ca', pki.key], /CA file .* holds no PEM certificate/],
  ];
  for (const [args, message] of cases) {
    const result = await fixture.spawnDaemon(join(fixture.dir, 'bad-nbd-tls'), args).done;
    assert.equal(result.code, 1, args.join(' '));
    assert.match(result.output, message);
  }
});

test('--nbd-tls optional: plain-text and TLS clients are both served by one daemon', { skip, timeout: 120_000 }, async () => {
  const optional = await fixture.start(undefined, ['--tls-cert', pki.cert, '--tls-key', pki.key, '--nbd-tls', 'optional']);
  await cli(optional, ['volume', 'create', 'vol', '--size', '16MiB']);
  const plain = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 64k', optional.uri('vol')], 60_000);
  assert.equal(plain.code, 0, plain.stderr);
  const secure = await qemuTls(optional, pki.anonymous, ['read -P 0x33 0 64k']);
  assert.equal(secure.code, 0, secure.stderr);
  assert.doesNotMatch(secure.stdout, /Pattern verification failed/);
  const info = JSON.parse(await mustRun('nbdinfo', ['--json', nbds(optional, pki.anonymous)])) as { exports: Array<{ 'export-size': number }> };
  assert.equal(info.exports[0]!['export-size'], 16 * MiB);
  await optional.stop();
});
