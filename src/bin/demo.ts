// `npm start`: a throw-away array in a temp directory with a 1 GiB volume, and how to use it.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const tidemark = join(root, 'bin', 'tidemark');
const api = process.env.TIDEMARK_DEMO_API ?? '127.0.0.1:7480';
const nbd = process.env.TIDEMARK_DEMO_NBD ?? '127.0.0.1:10809';

const dir = await mkdtemp(join(tmpdir(), 'tidemark-demo-'));
const socket = join(dir, 'nbd.sock');
const child = spawn(tidemark, ['array', 'start', '--data', join(dir, 'data'), '--name', 'demo', '--api', api, '--nbd', nbd,
  '--nbd-socket', socket], { stdio: ['ignore', 'pipe', 'inherit'] });

let cleaning = false;
async function cleanUp(code: number): Promise<never> {
  if (!cleaning) {
    cleaning = true;
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    await rm(dir, { recursive: true, force: true });
  }
  process.exit(code);
}
process.on('SIGINT', () => void cleanUp(0));
process.on('SIGTERM', () => void cleanUp(0));
child.once('exit', (code) => {
  if (!cleaning) {
    process.stderr.write(`the array exited (${code}); is ${api} or ${nbd} already in use? Set TIDEMARK_DEMO_API / TIDEMARK_DEMO_NBD.\n`);
    void cleanUp(1);
  }
});

const lines = createInterface({ input: child.stdout! });
const started = await new Promise<{ api: string; nbd: string }>((resolve) => {
  lines.on('line', (line) => {
    process.stdout.write(`  log: ${line}\n`);
    try {
      const entry = JSON.parse(line) as { msg?: string; api?: string; nbd?: string };
      if (entry.msg === 'array started') resolve({ api: entry.api!, nbd: entry.nbd! });
    } catch {
      // not a log line
    }
  });
});
lines.removeAllListeners('line');
lines.on('line', () => undefined); // keep draining the daemon's log so it never blocks

const response = await fetch(`http://${started.api}/v1/volumes`, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'demo', sizeBytes: 2 ** 30 }),
});
if (!response.ok) {
  process.stderr.write(`creating the demo volume failed: ${await response.text()}\n`);
  await cleanUp(1);
}

const uri = `nbd://${started.nbd}/demo`;
process.stdout.write(`
tidemark demo: array "demo" in ${dir}
  HTTP API  http://${started.api}      NBD  ${uri}      Unix socket  ${socket}
A 1 GiB volume "demo" is exported. Try, in another terminal:

  qemu-io -f raw -c 'write -P 0xa5 0 1M' -c 'read -P 0xa5 0 1M' ${uri}
  nbdinfo ${uri}
  nbdinfo --map ${uri}
  nbdcopy ${uri} /tmp/demo.img
  fio --name=demo --ioengine=nbd --uri=${uri} --rw=randwrite --bs=4k --iodepth=32 --size=256m --runtime=10 --time_based

  export TIDEMARK_ARRAY=http://${started.api}
  ${tidemark} volume list
  ${tidemark} volume changes demo                   # tracks written since the last reset
  ${tidemark} volume create copy --size 1GiB
  ${tidemark} clone establish demo copy && ${tidemark} clone wait demo copy --until synchronized
  ${tidemark} clone split demo copy                 # copy now holds demo's image of this instant
  curl -s http://${started.api}/metrics | grep tidemark_

Press Ctrl-C to stop the array and remove ${dir}.
`);
