// bench/link: what the link itself costs, without volumes or daemons: two LinkNetworks in this
// process over loopback TCP. Reports process CPU time (user + sys, both ends) as well as wall
// time, because CPU time is what other load on a shared machine distorts least.
//  1. bulk: `--size` bytes (default 256 MiB) as 1 MiB messages, until all are delivered;
//  2. round trips: 5,000 × a 4 KiB request answered by a 64-byte reply (the shape of a sync write).
import { LinkNetwork } from '../src/adapters/net/link-network.js';

const MiB = 1024 * 1024;

async function measure(fn: () => Promise<void>): Promise<{ cpuMs: number; wallMs: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const cpu = process.cpuUsage(cpu0);
  return { cpuMs: (cpu.user + cpu.system) / 1000, wallMs: performance.now() - t0 };
}

export async function benchLink(args: { sizeBytes: number; rounds?: number }): Promise<void> {
  const secret = new TextEncoder().encode('a shared secret of more than sixteen bytes');
  const a = await LinkNetwork.start({ arrayName: 'alpha', listen: { host: '127.0.0.1', port: 0 } });
  const b = await LinkNetwork.start({ arrayName: 'beta', listen: { host: '127.0.0.1', port: 0 } });
  try {
    a.addPeer({ name: 'beta', address: `127.0.0.1:${b.address!.port}`, secret });
    b.addPeer({ name: 'alpha', address: `127.0.0.1:${a.address!.port}`, secret });
    const deadline = Date.now() + 10_000;
    while (!a.isUp('beta') || !b.isUp('alpha')) {
      if (Date.now() > deadline) throw new Error('link did not come up');
      await new Promise((r) => setTimeout(r, 20));
    }
    let onB: (m: Uint8Array) => void = () => {};
    let onA: (m: Uint8Array) => void = () => {};
    b.onMessage((_p, m) => onB(m));
    a.onMessage((_p, m) => onA(m));

    const messages = Math.max(1, Math.floor(args.sizeBytes / MiB));
    const bulk = await measure(async () => {
      let got = 0;
      const done = new Promise<void>((resolve) => { onB = () => { if (++got === messages) resolve(); }; });
      const message = new Uint8Array(MiB).fill(7);
      for (let i = 0; i < messages; i++) await a.send('beta', message);
      await done;
    });
    const rounds = args.rounds ?? 5000;
    const ping = await measure(async () => {
      onB = () => { void b.send('alpha', new Uint8Array(64)); };
      const request = new Uint8Array(4096).fill(3);
      for (let i = 0; i < rounds; i++) {
        const reply = new Promise<Uint8Array>((resolve) => { onA = resolve; });
        await a.send('beta', request);
        await reply;
      }
    });
    const bytes = messages * MiB;
    console.log(`bench/link: two LinkNetworks in one process over loopback (CPU = user + sys of both ends)`);
    console.log(`bulk ${messages} × 1 MiB: ${(bytes / 1e6 / (bulk.wallMs / 1000)).toFixed(0)} MB/s, CPU ${(bulk.cpuMs / (bytes / 2 ** 30)).toFixed(0)} ms per GiB`);
    console.log(`round trips ${rounds} × (4 KiB request, 64 B reply): ${(ping.wallMs * 1000 / rounds).toFixed(1)} µs each, CPU ${(ping.cpuMs * 1000 / rounds).toFixed(1)} µs each`);
  } finally {
    await a.close();
    await b.close();
  }
}
