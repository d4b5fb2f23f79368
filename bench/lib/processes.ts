// Process helpers for benchmarks: free ports, starting and stopping servers, waiting for them.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { profiledEnv } from '../../test/helpers/cpu-profile.js';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const tidemarkBin = join(repoRoot, 'bin', 'tidemark');

export { freePort } from '../../test/helpers/free-port.js';

export async function waitForPort(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function startProcess(command: string, args: string[], name: string): ChildProcess {
  // Daemons (`tidemark array ...`) run profiled under TIDEMARK_BENCH_PROFILE; other commands as given.
  const daemon = command === tidemarkBin && args[0] === 'array';
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: daemon ? profiledEnv() : process.env });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM' && signal !== 'SIGKILL') {
      process.stderr.write(`${name} exited with ${code ?? signal}\n${stderr}\n`);
    }
  });
  return child;
}

export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

export async function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.once('error', reject);
    // 'close', not 'exit': only then has all of the child's output been read.
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} failed (${code}): ${err}`))));
  });
}

/**
 * An API caller for an array started on `dataDir` and listening on 127.0.0.1:`port`, with the token
 * the array wrote to DATA/api-token (read on first use: the array writes it before it listens).
 */
export function arrayApi(port: number, dataDir: string): <T = unknown>(method: string, path: string, body?: unknown) => Promise<T> {
  let token: string | undefined;
  return async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    token ??= (await readFile(join(dataDir, 'api-token'), 'utf8')).trim();
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(method === 'GET' ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path} failed (${response.status}): ${text}`);
    return JSON.parse(text) as T;
  };
}
