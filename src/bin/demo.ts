// `npm start`: two throw-away arrays ("east" and "west") in a temp directory, joined by an
// authenticated replication link, with a 1 GiB volume on east replicated synchronously to west,
// and how to use them.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const tidemark = join(root, 'bin', 'tidemark');

interface Site {
  readonly name: string;
  readonly api: string;
  readonly nbd: string;
  readonly link: string;
}

const sites: Site[] = [
  { name: 'east', api: process.env.TIDEMARK_DEMO_API ?? '127.0.0.1:7480', nbd: process.env.TIDEMARK_DEMO_NBD ?? '127.0.0.1:10809',
    link: process.env.TIDEMARK_DEMO_LINK ?? '127.0.0.1:7481' },
  { name: 'west', api: process.env.TIDEMARK_DEMO_WEST_API ?? '127.0.0.1:7490', nbd: process.env.TIDEMARK_DEMO_WEST_NBD ?? '127.0.0.1:10819',
    link: process.env.TIDEMARK_DEMO_WEST_LINK ?? '127.0.0.1:7491' },
];

const dir = await mkdtemp(join(tmpdir(), 'tidemark-demo-'));
const children: ChildProcess[] = [];
let cleaning = false;

async function cleanUp(code: number): Promise<never> {
  if (!cleaning) {
    cleaning = true;
    await Promise.all(children.map(async (child) => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }));
    await rm(dir, { recursive: true, force: true });
  }
  process.exit(code);
}
process.on('SIGINT', () => void cleanUp(0));
process.on('SIGTERM', () => void cleanUp(0));

/** Starts one array and resolves when it logs 'array started'; its log lines are echoed. */
function startArray(site: Site): Promise<void> {
  const child = spawn(tidemark, ['array', 'start', '--data', join(dir, site.name), '--name', site.name, '--api', site.api, '--nbd', site.nbd,
    '--nbd-socket', join(dir, `${site.name}.sock`), '--link', site.link], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  child.once('exit', (code) => {
    if (!cleaning) {
      process.stderr.write(`array ${site.name} exited (${code}); is ${site.api}, ${site.nbd} or ${site.link} already in use? ` +
        'Set TIDEMARK_DEMO_API / _NBD / _LINK (east) and TIDEMARK_DEMO_WEST_API / _NBD / _LINK (west).\n');
      void cleanUp(1);
    }
  });
  const lines = createInterface({ input: child.stdout! });
  return new Promise<void>((resolve) => {
    lines.on('line', (line) => {
      process.stdout.write(`  ${site.name}: ${line}\n`);
      if (line.includes('"array started"')) {
        lines.removeAllListeners('line');
        lines.on('line', () => undefined); // keep draining the log so the daemon never blocks
        resolve();
      }
    });
  });
}

/** The API token an array wrote to its data directory at its first start. */
const tokenFile = (site: Site): string => join(dir, site.name, 'api-token');
const tokens = new Map<string, string>();

async function call(site: Site, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  let token = tokens.get(site.name);
  if (token === undefined) tokens.set(site.name, token = (await readFile(tokenFile(site), 'utf8')).trim());
  const response = await fetch(`http://${site.api}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(method === 'GET' ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json() as Record<string, unknown>;
  if (!response.ok) {
    process.stderr.write(`${method} ${path} on ${site.name} failed: ${JSON.stringify(json)}\n`);
    return cleanUp(1);
  }
  return json;
}

const [east, west] = sites as [Site, Site];
await Promise.all(sites.map(startArray));
const secret = join(dir, 'link.secret');
await writeFile(secret, randomBytes(32).toString('base64'), { mode: 0o600 });
await call(east, 'POST', '/v1/peers', { name: 'west', address: west.link, secretFile: secret });
await call(west, 'POST', '/v1/peers', { name: 'east', address: east.link, secretFile: secret });
await call(east, 'POST', '/v1/volumes', { name: 'demo', sizeBytes: 2 ** 30 });
await call(west, 'POST', '/v1/volumes', { name: 'demo-r', sizeBytes: 2 ** 30 });
for (let i = 0; (await call(east, 'GET', '/v1/peers/west')).link !== 'up'; i++) {
  if (i > 100) {
    process.stderr.write('the replication link between east and west did not come up\n');
    await cleanUp(1);
  }
  await new Promise((r) => setTimeout(r, 100));
}
await call(east, 'POST', '/v1/pairs', { volume: 'demo', peer: 'west', remoteVolume: 'demo-r', mode: 'sync' });

const uri = `nbd://${east.nbd}/demo`;
const replica = `nbd://${west.nbd}/demo-r`;
process.stdout.write(`
tidemark demo: arrays "east" and "west" in ${dir}, joined by an authenticated, encrypted replication link
  east  API http://${east.api}   NBD ${uri}   (R1, read/write)
  west  API http://${west.api}   NBD ${replica}   (R2, write-disabled while replicating)
The 1 GiB volume "demo" on east is replicated synchronously to "demo-r" on west.

Dashboards (the page asks for the API token once; paste the token file's content):
  east  http://${east.api}/   token: ${tokenFile(east)}
  west  http://${west.api}/   token: ${tokenFile(west)}

Try, in another terminal:

  qemu-io -f raw -c 'write -P 0xa5 0 1M' ${uri}
  qemu-io -f raw -r -c 'read -P 0xa5 0 1M' ${replica}          # already on west
  nbdinfo --map ${uri}
  fio --name=demo --ioengine=nbd --uri=${uri} --rw=randwrite --bs=4k --iodepth=32 --size=256m --runtime=10 --time_based

  export TIDEMARK_ARRAY=http://${east.api} TIDEMARK_TOKEN_FILE=${tokenFile(east)}
  ${tidemark} status                              # the estate on one screen (--watch to follow it)
  ${tidemark} events --follow                      # the timeline: links, pair states, commands, failovers
  ${tidemark} pair show demo                       # role, mode, state, owed tracks, lag, link
  ${tidemark} pair suspend demo && qemu-io -f raw -c 'write -P 1 0 64k' ${uri}
  ${tidemark} pair resume demo && ${tidemark} pair wait demo --until synchronized
  ${tidemark} pair failover demo                   # west's demo-r becomes writable, east's demo read-only
  ${tidemark} pair failback demo                   # west's changes come back; east is the source again
  ${tidemark} pair set-mode demo adaptive
  ${tidemark} pair set-mode demo async && ${tidemark} pair show demo   # ordered cycles: R2 is always a point in time
  ${tidemark} group create g && ${tidemark} group add g demo && ${tidemark} group show g   # a consistency group (east coordinates)
  ${tidemark} volume create copy --size 1GiB && ${tidemark} clone establish demo copy
  curl -s http://${east.api}/metrics | grep tidemark_
  curl -s -H "Authorization: Bearer $(cat ${tokenFile(east)})" http://${east.api}/v1/pairs   # every route but /metrics needs the token

Press Ctrl-C to stop both arrays and remove ${dir}.
`);
