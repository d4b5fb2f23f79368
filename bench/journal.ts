// bench/journal: what journal replication costs a host write, in one run against the unpaired
// volume and a sync pair: fio 4 KiB random writes at QD1 (latency) and QD32 (IOPS) through the
// primary's NBD export, for a journal pair with tokens ahead and sync, sequencer on the primary's
// array and on another array. Each journal subject also prints, when it stops, the bytes its links
// carried divided by the bytes the host wrote (tokens, fan-out, headers and data together).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { arrayApi, freePort, startProcess, stopProcess, tidemarkBin, waitForPort } from './lib/processes.js';
import { benchReplication, tidemarkSubject, tidemarkSyncSubject, type ReplicationSubject, type SubjectContext } from './replication.js';

type Api = <T = unknown>(method: string, path: string, body?: unknown) => Promise<T>;

async function startJournal(ctx: SubjectContext, name: string, tokens: 'ahead' | 'sync', remoteSequencer: boolean) {
  const { dir, sizeBytes } = ctx;
  const secret = join(dir, 'secret');
  await writeFile(secret, 'bench secret, long enough for the link');
  const names = remoteSequencer ? ['east', 'west', 'north'] : ['east', 'west'];
  const ports = new Map<string, number[]>();
  for (const n of names) ports.set(n, [await freePort(), await freePort(), await freePort()]);
  const daemons = names.map((n) => {
    const [api, nbd, link] = ports.get(n)!;
    return startProcess(tidemarkBin, ['array', 'start', '--data', join(dir, n), '--name', n,
      '--api', `127.0.0.1:${api}`, '--nbd', `127.0.0.1:${nbd}`, '--link', `127.0.0.1:${link}`], `tidemark-${name}-${n}`);
  });
  try {
    const apis = new Map<string, Api>();
    for (const n of names) {
      await waitForPort(ports.get(n)![0]!);
      apis.set(n, arrayApi(ports.get(n)![0]!, join(dir, n)));
    }
    const api = (n: string): Api => apis.get(n)!;
    const peer = async (a: string, b: string): Promise<void> => {
      await api(a)('POST', '/v1/peers', { name: b, address: `127.0.0.1:${ports.get(b)![2]}`, secretFile: secret });
      await api(b)('POST', '/v1/peers', { name: a, address: `127.0.0.1:${ports.get(a)![2]}`, secretFile: secret });
      for (let i = 0; ; i++) {
        const p = await api(a)<{ link?: string }>('GET', `/v1/peers/${b}`).catch(() => undefined);
        if (p?.link === 'up') break;
        if (i > 300) throw new Error(`link ${a}-${b} did not come up`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) await peer(names[i]!, names[j]!);
    await api('east')('POST', '/v1/volumes', { name: 'bench', sizeBytes });
    await api('west')('POST', '/v1/volumes', { name: 'bench-r', sizeBytes });
    const sequencer = remoteSequencer ? 'north' : 'east';
    const settings = { name: 'j', tokens, intervalMs: 20, batchBytes: 1024 * 1024 };
    if (remoteSequencer) await api('north')('POST', '/v1/journals', settings);
    await api('east')('POST', '/v1/journals', { ...settings, ...(remoteSequencer ? { sequencer } : {}) });
    await api('east')('POST', '/v1/journals/j/pairs', { volume: 'bench', peer: 'west', remoteVolume: 'bench-r' });
    await waitForPort(ports.get('east')![1]!);
    return {
      nbdUri: `nbd://127.0.0.1:${ports.get('east')![1]}/bench`,
      note: `${name}: primary east → secondary west, sequencer ${sequencer}, tokens ${tokens}, interval 20 ms`,
      stop: async () => {
        try {
          const metrics = await (await fetch(`http://127.0.0.1:${ports.get('east')![0]}/metrics`)).text();
          const written = Number(/tidemark_volume_bytes_total\{volume="bench",op="write"\} (\d+)/.exec(metrics)?.[1] ?? 0);
          let linkBytes = 0;
          for (const n of names) {
            for (const m of names) {
              if (m === n) continue;
              const p = await api(n)<{ bytesSent?: number }>('GET', `/v1/peers/${m}`).catch(() => undefined);
              linkBytes += p?.bytesSent ?? 0;
            }
          }
          const j = await api('west')<{ sequence: { applied: number | null } }>('GET', '/v1/journals/j');
          console.log(`${name}: ${(written / 1048576).toFixed(1)} MiB written, ${(linkBytes / 1048576).toFixed(1)} MiB on all links: ` +
            `${written > 0 ? (linkBytes / written).toFixed(2) : '-'} link bytes per byte written; secondary applied ${j.sequence.applied}`);
        } catch (e) {
          console.log(`${name}: could not read counters: ${(e as Error).message}`);
        }
        for (const d of daemons) await stopProcess(d);
      },
    };
  } catch (e) {
    for (const d of daemons) await stopProcess(d);
    throw e;
  }
}

const journalSubject = (name: string, tokens: 'ahead' | 'sync', remoteSequencer: boolean): ReplicationSubject => ({
  name, baseline: 'tidemark', start: (ctx) => startJournal(ctx, name, tokens, remoteSequencer),
});

export function benchJournal(args: { seconds: number; sizeBytes: number }): Promise<void> {
  return benchReplication(args, [
    tidemarkSubject, tidemarkSyncSubject,
    journalSubject('journal-ahead', 'ahead', false),
    journalSubject('journal-sync', 'sync', false),
    journalSubject('journal-ahead-rs', 'ahead', true),
    journalSubject('journal-sync-rs', 'sync', true),
  ]);
}
