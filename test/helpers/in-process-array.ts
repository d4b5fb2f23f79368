// An array in the test process: real file adapters in a temp dir, the real NBD server on an
// ephemeral port and a Unix socket. For tests that need the NBD front end without the daemon.
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { ArrayService } from '../../src/app/array-service.js';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournalFactory } from '../../src/adapters/fs/file-meta-store.js';
import { FileSpillStore } from '../../src/adapters/fs/file-spill-store.js';
import { startNbdServer, type NbdServer } from '../../src/adapters/nbd-server/nbd-server.js';
import type { PeerLinks } from '../../src/ports/peer-transport.js';

const quietLogger = process.env.TIDEMARK_TEST_LOG ? { info: console.log, warn: console.log, debug: console.log, error: console.log } : { info() {}, warn() {}, debug() {}, error() {} };

export interface TestArray {
  readonly service: ArrayService;
  readonly nbd: NbdServer;
  readonly dir: string;
  uri(volume: string): string;
  unixUri(volume: string): string;
  close(): Promise<void>;
  /** Stops without flushing or persisting anything; the directory stays for a restart. */
  crash(): Promise<void>;
}

export interface TestArrayOptions {
  readonly name?: string;
  readonly links?: PeerLinks;
  /** Reopen an array left by an earlier one (after abandon(), the simulated crash). */
  readonly dir?: string;
  readonly groupWindowTimeoutMs?: number;
  readonly groupStallAfterMs?: number;
}

export async function startTestArray(options: TestArrayOptions = {}): Promise<TestArray> {
  const dir = options.dir ?? await mkdtemp(join(tmpdir(), 'tidemark-test-'));
  const volumes = join(dir, 'volumes');
  await mkdir(volumes, { recursive: true });
  const spill = await FileSpillStore.open(join(dir, 'spill'));
  const service = await ArrayService.open({
    name: options.name ?? 'test',
    spill,
    ...(options.links ? { links: options.links } : {}),
    ...(options.groupWindowTimeoutMs !== undefined ? { groupWindowTimeoutMs: options.groupWindowTimeoutMs } : {}),
    ...(options.groupStallAfterMs !== undefined ? { groupStallAfterMs: options.groupStallAfterMs } : {}),
    meta: await FileMetaStore.open(join(dir, 'meta')),
    stores: new FileBlockStoreFactory(volumes),
    journals: new FileSlotJournalFactory(volumes),
    nowMs: () => Date.now(),
  });
  const socketPath = join(dir, 'nbd.sock');
  const nbd = await startNbdServer({ catalog: service, logger: quietLogger, tcp: { host: '127.0.0.1', port: 0 }, socketPath });
  return {
    service, nbd, dir,
    uri: (volume) => `nbd://127.0.0.1:${nbd.tcpAddress!.port}/${volume}`,
    unixUri: (volume) => `nbd+unix:///${volume}?socket=${socketPath}`,
    async close() {
      await nbd.close();
      await service.close();
      await spill.close();
      await rm(dir, { recursive: true, force: true });
    },
    async crash() {
      await nbd.close();
      await service.abandon();
      await spill.close();
    },
  };
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion (killed after `timeoutMs`), in `env` when given. */
export function runCommand(command: string, args: string[], timeoutMs = 60_000, env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a command and fails with its output unless it exits 0. */
export async function mustRun(command: string, args: string[], timeoutMs?: number): Promise<string> {
  const result = await runCommand(command, args, timeoutMs);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${result.code}\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}
