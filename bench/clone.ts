// bench/clone: clone establish of a volume vs `cp` of the same image file, and a refresh after 1% of
// the tracks changed vs `rsync --ignore-times --inplace --no-whole-file` of the image (--ignore-times: the
// test changes the file within the same second as the copy, which rsync's size+mtime check would miss), in one run on one file system.
// The refresh is timed as a user runs it: `tidemark clone reestablish --wait`, a CLI process from
// start to exit (the wait is a long poll answered when the copy ends). Prints tidemark/peer speed ratios (higher is
// better for tidemark) and the goal (refresh ≥ 10× rsync). cp and rsync do not fsync; tidemark makes its copy durable
// before it says synchronized. Each timed step starts after a `sync`, as the other benches' runs do: without it the
// step that comes first pays for writing back the gigabytes the set-up (or the step before) left dirty (the kernel
// throttles every writer then), and the refresh, which runs right after two 4 GiB cp's, took 0.35-0.47 s where it takes
// ~0.2 s on a quiet disk.
import { mkdtemp, rm, open, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arrayApi, freePort, run, startProcess, stopProcess, tidemarkBin, waitForPort } from './lib/processes.js';
import { goal } from './lib/goals.js';

const TRACK = 64 * 1024;

/** Set once the array is started: the API of the array under test. */
let arrayCall: ReturnType<typeof arrayApi> | undefined;
const api = <T>(_port: number, method: string, path: string, body?: unknown): Promise<T> => arrayCall!<T>(method, path, body);

async function timeUntil(port: number, path: string, state: string): Promise<number> {
  const started = performance.now();
  for (;;) {
    const status = await api<{ state: string }>(port, 'GET', path);
    if (status.state === state) return (performance.now() - started) / 1000;
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return (performance.now() - started) / 1000;
}

export async function benchClone(args: { sizeBytes: number }): Promise<void> {
  const dir = await mkdtemp(join(process.env.TIDEMARK_BENCH_DIR ?? tmpdir(), 'tidemark-bench-clone-'));
  const [apiPort, nbdPort] = [await freePort(), await freePort()];
  const daemon = startProcess(tidemarkBin, ['array', 'start', '--data', join(dir, 'array'), '--api', `127.0.0.1:${apiPort}`,
    '--nbd', `127.0.0.1:${nbdPort}`], 'tidemark');
  try {
    await waitForPort(apiPort);
    arrayCall = arrayApi(apiPort, join(dir, 'array'));
    const source = join(dir, 'source.img');
    // Incompressible data, written once to a file and once into the volume.
    const file = await open(source, 'w');
    const chunk = 16 * 1024 * 1024;
    for (let at = 0; at < args.sizeBytes; at += chunk) await file.write(randomBytes(Math.min(chunk, args.sizeBytes - at)), 0, undefined, at);
    await file.close();
    await api(apiPort, 'POST', '/v1/volumes', { name: 'std', sizeBytes: args.sizeBytes });
    await api(apiPort, 'POST', '/v1/volumes', { name: 'copy', sizeBytes: args.sizeBytes });
    await run('nbdcopy', [source, `nbd://127.0.0.1:${nbdPort}/std`]);

    // Full copy: establish until synchronized vs cp.
    await run('sync', []);
    await api(apiPort, 'POST', '/v1/clones', { std: 'std', clone: 'copy' });
    const establishSeconds = await timeUntil(apiPort, '/v1/clones/std/copy', 'synchronized');
    await run('sync', []);
    const cpSeconds = await timed(() => run('cp', [source, join(dir, 'cp-copy.img')]));
    await api(apiPort, 'POST', '/v1/clones/std/copy/split', {});
    await run('cp', [source, join(dir, 'rsync-copy.img')]);

    // Change 1% of the tracks, the same way in the volume and in the source file.
    const tracks = args.sizeBytes / TRACK;
    const changed = new Set<number>();
    while (changed.size < Math.ceil(tracks / 100)) changed.add(Math.floor(Math.random() * tracks));
    const commands = [...changed].flatMap((t) => ['-c', `write -P ${(t % 250) + 1} ${t * TRACK} 4k`]);
    await run('qemu-io', ['-f', 'raw', ...commands, `nbd://127.0.0.1:${nbdPort}/std`]);
    const handle = await open(source, 'r+');
    for (const t of changed) await handle.write(Buffer.alloc(4096, (t % 250) + 1), 0, 4096, t * TRACK);
    await handle.close();

    const cli = ['--array', `http://127.0.0.1:${apiPort}`, '--token-file', join(dir, 'array', 'api-token')];
    await run('sync', []);
    const refreshSeconds = await timed(async () => {
      await run(tidemarkBin, [...cli, 'clone', 'reestablish', 'std', 'copy', '--wait']);
    });
    const refreshed = await api<{ tracksCopied: number }>(apiPort, 'GET', '/v1/clones/std/copy');
    await run('sync', []);
    const rsyncSeconds = await timed(() => run('rsync', ['--ignore-times', '--inplace', '--no-whole-file', source, join(dir, 'rsync-copy.img')]));

    const gib = (args.sizeBytes / 2 ** 30).toFixed(1);
    console.log(`bench/clone: ${gib} GiB volume, ${changed.size} of ${tracks} tracks changed before the refresh`);
    console.log(`full copy   tidemark establish ${establishSeconds.toFixed(2)} s   cp ${cpSeconds.toFixed(2)} s   ` +
      `ratio ${(cpSeconds / establishSeconds).toFixed(2)}x (cp time / establish time)`);
    console.log(`refresh 1%  tidemark clone reestablish --wait (CLI) ${refreshSeconds.toFixed(3)} s (${refreshed.tracksCopied} tracks)   ` +
      `rsync ${rsyncSeconds.toFixed(2)} s   ratio ${(rsyncSeconds / refreshSeconds).toFixed(1)}x (rsync time / reestablish time)`);
    goal('clone refresh of 1% vs rsync of the image, wall time through the CLI', rsyncSeconds / refreshSeconds, 'atLeast', 10);
    await writeFile(join(dir, 'done'), '');
  } finally {
    await stopProcess(daemon);
    await rm(dir, { recursive: true, force: true });
  }
}
