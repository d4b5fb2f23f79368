// QEMU peers for bench/replication: a qemu-storage-daemon exporting a raw file over NBD, either
// plain or with an active (write-blocking) blockdev-mirror to a qemu-nbd target — QEMU's
// synchronous mirroring, the peer a tidemark sync pair is compared against.
//
// The export is created on the command line, before the mirror starts: blockdev-mirror inserts its
// filter node above the source and moves the source's parents (our export) onto it, so host writes
// go through the write-blocking path. An export added after the mirror started would attach below
// the filter and bypass it.
import { connect, type Socket } from 'node:net';
import type { ChildProcess } from 'node:child_process';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, startProcess, stopProcess, waitForPort } from './processes.js';

const QMP_TIMEOUT_MS = 15_000;
const MIRROR_READY_TIMEOUT_MS = 120_000;

type QmpReply = { return?: unknown; error?: { class: string; desc: string }; id?: number; event?: string; QMP?: unknown };

/** A minimal QMP client: greeting, qmp_capabilities, then one command at a time matched by id. */
export class QmpClient {
  private buffered = '';
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private greeted: Promise<void>;
  readonly events: Array<{ event: string; data?: unknown }> = [];

  private constructor(private readonly socket: Socket) {
    let greet: () => void;
    this.greeted = new Promise((resolve) => { greet = resolve; });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffered += chunk;
      let newline: number;
      while ((newline = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, newline).trim();
        this.buffered = this.buffered.slice(newline + 1);
        if (line) this.dispatch(JSON.parse(line) as QmpReply, greet!);
      }
    });
    const fail = (e: Error): void => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('QMP connection closed')));
  }

  /** Connects to a QMP unix socket (retrying until the daemon has created it) and negotiates. */
  static async connect(path: string, timeoutMs = QMP_TIMEOUT_MS): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const socket = await new Promise<Socket | undefined>((resolve) => {
        const s = connect(path);
        s.once('connect', () => resolve(s));
        s.once('error', () => resolve(undefined));
      });
      if (socket) {
        const client = new QmpClient(socket);
        await withTimeout(client.greeted, timeoutMs, 'QMP greeting');
        await client.execute('qmp_capabilities');
        return client;
      }
      if (Date.now() > deadline) throw new Error(`QMP socket ${path} did not accept within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const id = this.nextId++;
    const reply = new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    });
    this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    return withTimeout(reply, QMP_TIMEOUT_MS, `QMP ${command}`);
  }

  close(): void {
    this.socket.destroy();
  }

  private dispatch(message: QmpReply, greet: () => void): void {
    if (message.QMP !== undefined) return greet();
    if (message.event !== undefined) {
      this.events.push({ event: message.event, data: (message as { data?: unknown }).data });
      return;
    }
    const waiter = message.id === undefined ? undefined : this.pending.get(message.id);
    if (!waiter) return;
    this.pending.delete(message.id!);
    if (message.error) waiter.reject(new Error(`QMP error ${message.error.class}: ${message.error.desc}`));
    else waiter.resolve(message.return);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); }),
  ]);
}

async function sparseFile(path: string, sizeBytes: number): Promise<void> {
  const file = await open(path, 'w');
  await file.truncate(sizeBytes);
  await file.close();
}

export interface QemuExport {
  /** fio/libnbd URI of the source export. */
  readonly nbdUri: string;
  /** Mirror job state once ready (undefined without a mirror). */
  readonly mirror?: { readonly jobId: string; readonly status: string; readonly offset: number; readonly len: number };
  stop(): Promise<void>;
}

interface BlockJobInfo { device: string; status: string; ready: boolean; offset: number; len: number; type: string }

/**
 * Starts qemu-storage-daemon serving a fresh sparse raw file of `sizeBytes` in `dir` as NBD export
 * 'bench' on loopback TCP. With `mirror: true`, also starts qemu-nbd serving a second raw file and
 * an active mirror (sync=full, copy-mode=write-blocking) onto it, and returns once the job is ready.
 */
export async function startQemuExport(options: { dir: string; sizeBytes: number; mirror: boolean }): Promise<QemuExport> {
  const { dir, sizeBytes } = options;
  const sourcePath = join(dir, 'qemu-source.img');
  const qmpPath = join(dir, 'qmp.sock');
  await sparseFile(sourcePath, sizeBytes);
  const exportPort = await freePort();
  // qemu-nbd has no "port 0": take a free port. --persistent: stay up across connections (the
  // readiness probe is one); --shared: allow the probe and the mirror's connection at once.
  const targetPort = options.mirror ? await freePort() : 0;
  const targetPath = join(dir, 'qemu-target.img');
  if (options.mirror) await sparseFile(targetPath, sizeBytes);
  const processes: ChildProcess[] = [];
  let qmp: QmpClient | undefined;
  const stop = async (): Promise<void> => {
    qmp?.close();
    // Source first: the mirror must not see its target disappear while it runs.
    for (const child of processes) await stopProcess(child);
  };
  try {
    const qsd = startProcess('qemu-storage-daemon', [
      '--chardev', `socket,id=qmp0,path=${qmpPath},server=on,wait=off`,
      '--monitor', 'chardev=qmp0',
      '--blockdev', `driver=file,node-name=source-file,filename=${sourcePath},aio=threads`,
      '--blockdev', 'driver=raw,node-name=source,file=source-file',
      '--nbd-server', `addr.type=inet,addr.host=127.0.0.1,addr.port=${exportPort}`,
      '--export', 'type=nbd,id=export0,node-name=source,name=bench,writable=on',
    ], 'qemu-storage-daemon');
    processes.push(qsd);
    if (options.mirror) {
      const target = startProcess('qemu-nbd', ['--format=raw', '--bind=127.0.0.1', `--port=${targetPort}`,
        '--export-name=target', '--persistent', '--shared=4', targetPath], 'qemu-nbd');
      processes.push(target);
      await waitForPort(targetPort);
    }
    await waitForPort(exportPort);
    qmp = await QmpClient.connect(qmpPath);
    if (!options.mirror) return { nbdUri: `nbd://127.0.0.1:${exportPort}/bench`, stop };

    await qmp.execute('blockdev-add', {
      driver: 'nbd', 'node-name': 'target',
      server: { type: 'inet', host: '127.0.0.1', port: String(targetPort) }, export: 'target',
    });
    const jobId = 'mirror0';
    await qmp.execute('blockdev-mirror', {
      'job-id': jobId, device: 'source', target: 'target', sync: 'full', 'copy-mode': 'write-blocking',
    });
    const deadline = Date.now() + MIRROR_READY_TIMEOUT_MS;
    for (;;) {
      const jobs = await qmp.execute<BlockJobInfo[]>('query-block-jobs');
      const job = jobs.find((j) => j.device === jobId);
      if (!job) throw new Error(`mirror job vanished; events: ${JSON.stringify(qmp.events)}`);
      if (job.ready && job.status === 'ready') {
        return { nbdUri: `nbd://127.0.0.1:${exportPort}/bench`, mirror: { jobId, status: job.status, offset: job.offset, len: job.len }, stop };
      }
      if (Date.now() > deadline) throw new Error(`mirror not ready within ${MIRROR_READY_TIMEOUT_MS} ms: ${JSON.stringify(job)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (e) {
    await stop();
    throw e;
  }
}
