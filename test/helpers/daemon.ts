// Real daemon processes for integration tests: `bin/tidemark array start` in a temp directory on
// ephemeral ports, its address read from the 'array started' log line. Every wait has a timeout and
// every process started here is killed by cleanup().
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mustRun, runCommand } from './in-process-array.js';

/** The repository root, from dist/test/helpers. */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const tidemarkBin = join(repoRoot, 'bin', 'tidemark');

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 20_000;

export interface ExitResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Where an API call goes: an array (with its token) or a bare URL (no token). */
export interface ApiTarget {
  readonly apiUrl: string;
  readonly token?: string;
}

export interface DaemonProcess extends ApiTarget {
  readonly dataDir: string;
  readonly apiUrl: string;
  /** DATA/api-token: the full-access token the array wrote at its first start. */
  readonly tokenFile: string;
  readonly token: string;
  /** `--array URL --token-file FILE`, the CLI's way to this array. */
  readonly cliArgs: readonly string[];
  readonly nbdPort: number;
  readonly socketPath: string;
  /** The replication link listener, when started with --link. */
  readonly linkAddress: string | undefined;
  readonly pid: number;
  uri(volume: string): string;
  unixUri(volume: string): string;
  /** stdout and stderr so far (JSON log lines). */
  output(): string;
  /** Sends a signal and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<ExitResult>;
}

/** A temp directory holding any number of arrays; cleanup() kills them and removes it. */
export class DaemonFixture {
  private readonly children = new Set<ChildProcess>();

  private constructor(readonly dir: string) {}

  static async create(): Promise<DaemonFixture> {
    return new DaemonFixture(await mkdtemp(join(tmpdir(), 'tidemark-daemon-test-')));
  }

  /** Spawns a daemon without waiting for it (for tests that expect it to fail); `env` replaces this process's. */
  spawnDaemon(dataDir: string, extraArgs: string[] = [], env?: NodeJS.ProcessEnv):
    { child: ChildProcess; output: () => string; done: Promise<ExitResult & { output: string }> } {
    const child = spawn(tidemarkBin, ['array', 'start', '--data', dataDir, '--api', '127.0.0.1:0', '--nbd', '127.0.0.1:0', ...extraArgs],
      { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
    this.children.add(child);
    let output = '';
    const logFile = process.env.TIDEMARK_TEST_KEEP ? `${dataDir}.${Date.now()}.log` : undefined;
    child.stdout!.on('data', (d: Buffer) => { output += d.toString(); if (logFile) appendFileSync(logFile, d); });
    child.stderr!.on('data', (d: Buffer) => { output += d.toString(); if (logFile) appendFileSync(logFile, d); });
    const done = new Promise<ExitResult & { output: string }>((resolve) => {
      child.once('exit', (code, signal) => {
        this.children.delete(child);
        // Let the pipes drain before reporting the output.
        setImmediate(() => resolve({ code, signal, output }));
      });
    });
    return { child, output: () => output, done };
  }

  /** Starts a daemon on `dataDir` (default: a fresh one) and waits for 'array started'. */
  async start(dataDir = join(this.dir, `array-${this.children.size}-${Date.now()}`), extraArgs: string[] = [],
    env?: NodeJS.ProcessEnv): Promise<DaemonProcess> {
    const socketPath = join(this.dir, `nbd-${Date.now()}-${Math.floor(Math.random() * 1e6)}.sock`);
    const { child, output, done } = this.spawnDaemon(dataDir, ['--nbd-socket', socketPath, ...extraArgs], env);
    const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`daemon did not start within ${START_TIMEOUT_MS} ms:\n${output()}`));
      }, START_TIMEOUT_MS);
      const check = (): void => {
        for (const line of output().split('\n')) {
          if (!line.includes('"array started"')) continue;
          clearTimeout(timer);
          child.stdout!.off('data', check);
          resolve(JSON.parse(line) as Record<string, unknown>);
          return;
        }
      };
      child.stdout!.on('data', check);
      void done.then((exit) => {
        clearTimeout(timer);
        reject(new Error(`daemon exited (${exit.code ?? exit.signal}) before starting:\n${exit.output}`));
      });
    });
    const api = addressOf(started.api);
    const nbd = addressOf(started.nbd);
    const tokenFile = join(dataDir, 'api-token');
    const apiUrl = `${started.apiTls === true ? 'https' : 'http'}://${api.host}:${api.port}`;
    return {
      dataDir, socketPath, pid: child.pid!, tokenFile,
      token: (await readFile(tokenFile, 'utf8')).trim(),
      cliArgs: ['--array', apiUrl, '--token-file', tokenFile],
      linkAddress: started.link ? `${addressOf(started.link).host}:${addressOf(started.link).port}` : undefined,
      apiUrl,
      nbdPort: nbd.port,
      uri: (volume) => `nbd://127.0.0.1:${nbd.port}/${volume}`,
      unixUri: (volume) => `nbd+unix:///${volume}?socket=${socketPath}`,
      output,
      stop: async (signal = 'SIGTERM') => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        const exit = await done;
        clearTimeout(timer);
        return { code: exit.code, signal: exit.signal };
      },
    };
  }

  async cleanup(): Promise<void> {
    for (const child of this.children) child.kill('SIGKILL');
    await Promise.all([...this.children].map((c) => new Promise((r) => c.once('exit', r))));
    // TIDEMARK_TEST_KEEP=1 keeps the arrays' directories and their logs (DIR/NAME.*.log) to look into a failure.
    if (process.env.TIDEMARK_TEST_KEEP) console.log(`kept ${this.dir}`);
    else await rm(this.dir, { recursive: true, force: true });
  }
}

/** 'host:port', '[v6]:port' or {host, port}, as the start line may carry either. */
function addressOf(value: unknown): { host: string; port: number } {
  if (typeof value === 'object' && value !== null) {
    const v = value as { host?: unknown; port?: unknown; tcp?: unknown };
    if (v.tcp !== undefined) return addressOf(v.tcp);
    return { host: String(v.host), port: Number(v.port) };
  }
  const match = /^\[?([^\]]*)\]?:(\d+)$/.exec(String(value));
  if (!match) throw new Error(`cannot parse address ${JSON.stringify(value)}`);
  return { host: match[1]!, port: Number(match[2]) };
}

export interface JsonResponse<T = unknown> {
  readonly status: number;
  readonly body: T;
}

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * One API call with a timeout, as the CLI makes it (the target's token; JSON content type on every
 * mutating request); the body parsed as JSON when it is JSON. `headers` replace the defaults.
 */
export async function api<T = Record<string, unknown>>(target: ApiTarget | string, method: string, path: string, body?: unknown,
  rawBody?: string, headers: Record<string, string> = {}): Promise<JsonResponse<T>> {
  const { apiUrl, token } = typeof target === 'string' ? { apiUrl: target, token: undefined } : target;
  const payload = rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
  const response = await fetch(`${apiUrl}${path}`, {
    method,
    headers: {
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...(payload !== undefined || MUTATING.has(method) ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    body: payload,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  const isJson = (response.headers.get('content-type') ?? '').includes('json');
  return { status: response.status, body: (isJson ? JSON.parse(text) : text) as T };
}

/** Polls `condition` every 50 ms until it holds or `timeoutMs` passes. */
export async function waitFor(what: string, condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Makes two daemons (started with `--name` and `--link`) each other's peer with one secret, through
 * the CLI, and waits for the link to come up.
 */
export async function peerUp(fixture: DaemonFixture, a: DaemonProcess, aName: string, b: DaemonProcess, bName: string): Promise<void> {
  const secret = join(fixture.dir, `secret-${aName}-${bName}`);
  await writeFile(secret, `secret between ${aName} and ${bName}, long enough\n`, { mode: 0o600 });
  const cli = async (array: DaemonProcess, ...args: string[]): Promise<string> => {
    const r = await runCommand(tidemarkBin, [...array.cliArgs, '--json', ...args]);
    if (r.code !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  await cli(a, 'peer', 'add', bName, '--address', b.linkAddress!, '--secret-file', secret);
  await cli(b, 'peer', 'add', aName, '--address', a.linkAddress!, '--secret-file', secret);
  await waitFor(`link ${aName}-${bName}`, async () => (JSON.parse(await cli(a, 'peer', 'show', bName)) as { link: string }).link === 'up', 15_000);
}

/** A volume's whole image as a host reads it, through the array's NBD export (nbdcopy into a file of the fixture). */
export async function imageOf(fixture: DaemonFixture, array: DaemonProcess, volume: string): Promise<Buffer> {
  const file = join(fixture.dir, `${volume}-${Date.now()}-${Math.random()}.img`);
  await mustRun('nbdcopy', [array.uri(volume), file]);
  return readFile(file);
}
