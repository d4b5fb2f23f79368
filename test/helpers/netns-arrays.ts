// Array daemons inside the namespaces of a NetnsPair, for WAN tests and benchmarks.
//
// Reachability from the test process (root namespace): the namespaces are joined only to each
// other (veth, or the userspace TUN link), so the root namespace has no route to their addresses —
// 10.x.y.1 would go out of the machine's default route. Hence:
//  - the HTTP API listens on 127.0.0.1:7480 *inside* the namespace (every namespace has its own
//    loopback and port space, so fixed ports do not clash) and the CLI runs in the namespace
//    (`ip netns exec NS tidemark --array http://127.0.0.1:7480 …`);
//  - NBD is also served on a Unix socket (`--nbd-socket`): path-bound Unix sockets live in the
//    filesystem, not in a network namespace, so qemu-io / nbdcopy / fio run in the root namespace
//    with `nbd+unix:///VOLUME?socket=PATH` and their traffic never crosses the shaped link;
//  - the replication link listens on the namespace's link address, the only traffic on the link;
//  - for frequent API calls (benchmarks polling counters) api() starts, once, a byte relay in the
//    namespace from a Unix socket to 127.0.0.1:7480, and talks HTTP over that socket from here:
//    no process start per call.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NetnsEnd, NetnsPair } from './netns.js';
import { profiledEnv } from './cpu-profile.js';

/** The repository root, from dist/test/helpers. */
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const tidemarkBin = join(repoRoot, 'bin', 'tidemark');

export const NS_API_PORT = 7480;
export const NS_NBD_PORT = 10809;
export const NS_LINK_PORT = 7481;

const START_TIMEOUT_MS = 20_000;

export interface CommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
}

/** Collects a child's output until it exits; SIGKILLs it after `timeoutMs`. */
export function collect(child: ChildProcess, timeoutMs: number): Promise<CommandResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, elapsedMs: performance.now() - started });
    });
  });
}

/** Runs a command in the root namespace. */
export function runRoot(command: string, args: readonly string[], timeoutMs = 60_000): Promise<CommandResult> {
  return collect(spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }), timeoutMs);
}

export async function mustRunRoot(command: string, args: readonly string[], timeoutMs = 60_000): Promise<CommandResult> {
  const r = await runRoot(command, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${r.code ?? r.signal}\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** One array daemon running in one namespace of a NetnsPair. */
// Inside the namespace: relays every connection on a Unix socket to the API's TCP port.
const API_RELAY = `
const net = require('node:net');
const [socketPath, port] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(Number(port), '127.0.0.1');
  c.pipe(u).pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
}).listen(socketPath, () => console.log('relaying'));
`;

export class NetnsArray {
  private output = '';
  private relay: Promise<string> | undefined;
  private token: string | undefined;

  private constructor(
    readonly name: string,
    readonly pair: NetnsPair,
    readonly end: NetnsEnd,
    readonly dataDir: string,
    readonly socketPath: string,
    private readonly child: ChildProcess,
  ) {}

  /** `ip:port` of this array's link listener, for the other array's `peer add --address`. */
  get linkAddress(): string {
    return `${this.end.address}:${NS_LINK_PORT}`;
  }

  /** The array's API token file (the data directory is on the shared filesystem). */
  get tokenFile(): string {
    return join(this.dataDir, 'api-token');
  }

  /** The API URL as seen from inside this array's namespace. */
  get apiUrl(): string {
    return `http://127.0.0.1:${NS_API_PORT}`;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** NBD URI usable from the root namespace (Unix socket). */
  uri(volume: string): string {
    return `nbd+unix:///${volume}?socket=${this.socketPath}`;
  }

  /** The daemon's log so far (JSON lines). */
  log(): string {
    return this.output;
  }

  /**
   * Starts `tidemark array start` in `end` and waits for its 'array started' line. `dir` must be a
   * short path (the NBD Unix socket lives there; sun_path is 108 bytes).
   */
  static async start(pair: NetnsPair, end: NetnsEnd, name: string, dir: string, extraArgs: readonly string[] = []): Promise<NetnsArray> {
    const dataDir = join(dir, name);
    const socketPath = join(dir, `${name}.sock`);
    const daemonArgs = ['array', 'start', '--data', dataDir, '--name', name,
      '--api', `127.0.0.1:${NS_API_PORT}`, '--nbd', `127.0.0.1:${NS_NBD_PORT}`, '--nbd-socket', socketPath,
      '--link', `${end.address}:${NS_LINK_PORT}`, ...extraArgs];
    // Profiled under TIDEMARK_BENCH_PROFILE (benches); the profile is written at stop().
    const child = pair.spawnIn(end, tidemarkBin, daemonArgs, { stdio: ['ignore', 'pipe', 'pipe'], env: profiledEnv() });
    const array = new NetnsArray(name, pair, end, dataDir, socketPath, child);
    child.stderr!.on('data', (d: Buffer) => { array.output += d.toString(); });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${name} did not start within ${START_TIMEOUT_MS} ms:\n${array.output}`));
      }, START_TIMEOUT_MS);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${code ?? signal}) before starting:\n${array.output}`));
      });
      createInterface({ input: child.stdout! }).on('line', (line) => {
        array.output += `${line}\n`;
        if (line.includes('"array started"')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return array;
  }

  /** `tidemark --array API --json ARGS` inside this array's namespace; the exit status is not checked. */
  runCli(args: readonly string[], timeoutMs = 60_000): Promise<CommandResult> {
    const child = this.pair.spawnIn(this.end, tidemarkBin, ['--array', this.apiUrl, '--token-file', this.tokenFile, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return collect(child, timeoutMs);
  }

  /** As runCli, failing unless it exits 0; returns stdout. */
  async cli(args: readonly string[], timeoutMs = 60_000): Promise<string> {
    const r = await this.runCli(args, timeoutMs);
    if (r.code !== 0) throw new Error(`${this.name}: tidemark ${args.join(' ')} exited ${r.code ?? r.signal}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }

  async json<T>(args: readonly string[], timeoutMs?: number): Promise<T> {
    return JSON.parse(await this.cli(args, timeoutMs)) as T;
  }

  /**
   * One HTTP API call from the root namespace through a relay in the array's namespace (started on
   * first use). Fails on a non-2xx status; returns the parsed JSON body.
   */
  async api<T = Record<string, unknown>>(method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
    this.relay ??= this.startRelay();
    const socketPath = await this.relay;
    const payload = body === undefined ? (method === 'GET' ? undefined : '') : JSON.stringify(body);
    this.token ??= readFileSync(this.tokenFile, 'utf8').trim();
    const headers: Record<string, string | number> = { authorization: `Bearer ${this.token}` };
    if (payload !== undefined) Object.assign(headers, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    return new Promise<T>((resolve, reject) => {
      const req = request({ socketPath, method, path, timeout: timeoutMs, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => { text += d; });
        res.on('end', () => {
          if ((res.statusCode ?? 0) >= 300) reject(new Error(`${this.name}: ${method} ${path} → ${res.statusCode}: ${text}`));
          else resolve((text ? JSON.parse(text) : {}) as T);
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${this.name}: ${method} ${path} timed out after ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  private async startRelay(): Promise<string> {
    const socketPath = `${this.socketPath}.api`;
    const child = this.pair.spawnIn(this.end, process.execPath, ['-e', API_RELAY, socketPath, String(NS_API_PORT)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('API relay did not start')), 10_000);
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`API relay exited ${code}`)); });
      child.stdout!.once('data', () => { clearTimeout(timer); resolve(); });
    });
    return socketPath;
  }

  /** SIGTERM, then SIGKILL after 10 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/** sha256 of a whole volume, read with nbdcopy over the array's Unix socket (from the root namespace). */
export async function volumeHash(array: NetnsArray, volume: string): Promise<string> {
  const child = spawn('nbdcopy', [array.uri(volume), '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const hash = createHash('sha256');
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => hash.update(d));
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const [code] = await new Promise<[number | null]>((resolve) => child.once('close', (c) => resolve([c])));
  if (code !== 0) throw new Error(`nbdcopy ${array.uri(volume)} failed (${code}): ${stderr}`);
  return hash.digest('hex');
}

/** Polls `condition` every `intervalMs` until it holds; throws after `timeoutMs`. */
export async function pollUntil(what: string, condition: () => Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (await condition()) return performance.now() - started;
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export interface PeerJson { name: string; address: string; link: string; bytesSent?: number; bytesReceived?: number; retransmittedPackets?: number }
export interface PairJson {
  pair: string; role: string; mode: string; state: string; tracksOwed: number; bytesOwed: number; lagSeconds: number;
  link: { state: string }; lastError: string | null;
  counters: { writesForwarded: number; recordsShipped: number; bytesShipped: number; zeroMarkers: number; recordsIdentical: number; bytesPulled: number };
}

/**
 * Both arrays add each other as peers with one secret file and wait for the link to come up.
 * `dialer` is the array whose name sorts lower.
 */
export async function peerUp(east: NetnsArray, west: NetnsArray, secretFile: string, timeoutMs = 20_000): Promise<void> {
  await east.cli(['peer', 'add', west.name, '--address', west.linkAddress, '--secret-file', secretFile]);
  await west.cli(['peer', 'add', east.name, '--address', east.linkAddress, '--secret-file', secretFile]);
  await pollUntil(`link ${east.name}↔${west.name} up`,
    async () => (await east.json<PeerJson>(['peer', 'show', west.name])).link === 'up', timeoutMs, 200);
}
