// Two Linux network namespaces joined by one emulated link, for replication tests that run array
// daemons on either side of a WAN: delay, jitter, loss, rate and queue limit, partition and heal.
//
// Two link backends, picked by NetnsPair.available()/create():
//  - 'netem': a veth pair with `tc qdisc replace ... netem` on BOTH ends (RTT = 2 × delay). This is
//    the intended backend; it needs a kernel with sch_netem.
//  - 'userspace': when the kernel has no netem (e.g. CONFIG_NET_SCH_NETEM unset and no module
//    support, as on the Firecracker kernels we run CI on), each namespace gets a TUN device and a
//    small python3 process in the root namespace moves IP packets between them, applying the same
//    shape per direction (serialisation at the rate, queue limit, random loss, delay + uniform
//    jitter, FIFO order kept). Same API, same semantics; throughput tops out at a few hundred Mbit/s.
//
// Partition = drop every packet in both directions while the interfaces stay up (netem loss 100%
// or the emulator dropping). We do not use `ip link set down`: that deletes the connected route,
// so connect()/send fail fast with ENETUNREACH instead of stalling, which is not what a cut WAN
// looks like to the arrays. With loss, established TCP connections stall in retransmission
// back-off and new connections hang in SYN retries; after heal() they recover at the next
// retransmission, i.e. up to one (backed-off) RTO later — keep partitions in tests short or expect
// that lag. heal() restores the last shape().
//
// Leaks: destroy() kills every process in both namespaces and deletes them (idempotent); a
// process 'exit' hook destroys pairs a test forgot; create() first deletes stale `tm-<pid>-…`
// namespaces whose <pid> is no longer alive (left by a crashed test process). The userspace
// emulator exits when its stdin closes, so its TUN devices die with a crashed test.
import { spawn, spawnSync, execFile, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

const execFileP = promisify(execFile);
const COMMAND_TIMEOUT_MS = 10_000;
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

export type LinkBackend = 'netem' | 'userspace';

export interface LinkShape {
  readonly delayMs?: number;
  readonly jitterMs?: number;
  readonly lossPercent?: number;
  readonly rateMbit?: number;
  readonly limitPackets?: number;
}

export interface NetnsEnd {
  /** Namespace name, usable with `ip netns exec`. */
  readonly name: string;
  /** This end's IPv4 address on the link (no prefix length). */
  readonly address: string;
  /** Link device inside the namespace. */
  readonly device: string;
}

export type NetnsAvailability =
  | { readonly available: true; readonly backend: LinkBackend; readonly note?: string }
  | { readonly available: false; readonly reason: string };

export interface NetnsCreateOptions {
  /** Namespace name prefix (default 'tm'); names are `<prefix>-<pid>-<n>-a|b`. */
  readonly prefix?: string;
  /** Default: the first backend available() finds ('netem' preferred). */
  readonly backend?: LinkBackend;
}

async function ip(...args: string[]): Promise<string> {
  const { stdout } = await execFileP('ip', args, { timeout: COMMAND_TIMEOUT_MS });
  return stdout;
}

async function tc(ns: string, ...args: string[]): Promise<void> {
  await execFileP('ip', ['netns', 'exec', ns, 'tc', ...args], { timeout: COMMAND_TIMEOUT_MS });
}

function netemArgs(shape: LinkShape): string[] {
  const args: string[] = [];
  if (shape.delayMs) args.push('delay', `${shape.delayMs}ms`, ...(shape.jitterMs ? [`${shape.jitterMs}ms`] : []));
  if (shape.lossPercent) args.push('loss', `${shape.lossPercent}%`);
  if (shape.rateMbit) args.push('rate', `${shape.rateMbit}mbit`);
  args.push('limit', String(shape.limitPackets ?? 1000));
  return args;
}

function validateShape(shape: LinkShape): void {
  for (const [key, value] of Object.entries(shape)) {
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
      throw new RangeError(`shape.${key} must be a finite number >= 0, got ${String(value)}`);
    }
  }
  if ((shape.lossPercent ?? 0) > 100) throw new RangeError('shape.lossPercent must be <= 100');
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let cachedAvailability: Promise<NetnsAvailability> | undefined;
let counter = 0;
const live = new Set<NetnsPair>();
let exitHookInstalled = false;

export class NetnsPair {
  private destroyed = false;
  private lastShape: LinkShape = {};
  private partitioned = false;
  private readonly spawned = new Set<ChildProcess>();

  private constructor(
    readonly a: NetnsEnd,
    readonly b: NetnsEnd,
    readonly backend: LinkBackend,
    private readonly emulator?: LinkEmulator,
  ) {}

  /** The userspace link shaper's process (the TUN backend), which benches place on a core; undefined with netem. */
  get shaperPid(): number | undefined {
    return this.emulator?.pid;
  }

  /**
   * Whether this machine can build a pair, probed for real once per process: root, `ip netns`,
   * veth, then `tc ... netem` in a scratch namespace; failing netem, TUN + python3.
   */
  static available(): Promise<NetnsAvailability> {
    cachedAvailability ??= probe();
    return cachedAvailability;
  }

  static async create(options: NetnsCreateOptions = {}): Promise<NetnsPair> {
    const availability = await NetnsPair.available();
    if (!availability.available) throw new Error(`network namespaces unavailable: ${availability.reason}`);
    const backend = options.backend ?? availability.backend;
    if (backend === 'netem' && availability.backend !== 'netem') {
      throw new Error(`netem backend unavailable: ${availability.note ?? ''}`);
    }
    const prefix = options.prefix ?? 'tm';
    if (!/^[a-z][a-z0-9]{0,5}$/.test(prefix)) throw new RangeError(`prefix must match [a-z][a-z0-9]{0,5}: ${prefix}`);
    await cleanupStale(prefix);
    const n = counter++;
    const base = `${prefix}-${process.pid}-${n}`;
    // Device names are limited to 15 bytes; addresses only need to be unique inside the pair's own
    // namespaces, but we vary them per process and instance anyway so logs are unambiguous.
    const dev = `${prefix}${process.pid.toString(36)}x${n.toString(36)}`.slice(0, 13);
    const net = `10.${1 + (process.pid % 254)}.${n % 256}`;
    const a: NetnsEnd = { name: `${base}-a`, address: `${net}.1`, device: `${dev}a` };
    const b: NetnsEnd = { name: `${base}-b`, address: `${net}.2`, device: `${dev}b` };
    let emulator: LinkEmulator | undefined;
    try {
      await ip('netns', 'add', a.name);
      await ip('netns', 'add', b.name);
      if (backend === 'netem') {
        await ip('link', 'add', a.device, 'netns', a.name, 'type', 'veth', 'peer', 'name', b.device, 'netns', b.name);
      } else {
        emulator = await LinkEmulator.start(a.device, b.device);
        await ip('link', 'set', a.device, 'netns', a.name);
        await ip('link', 'set', b.device, 'netns', b.name);
      }
      for (const end of [a, b]) {
        await ip('-n', end.name, 'link', 'set', 'lo', 'up');
        await ip('-n', end.name, 'addr', 'add', `${end.address}/24`, 'dev', end.device);
        await ip('-n', end.name, 'link', 'set', end.device, 'up');
      }
    } catch (e) {
      emulator?.stop();
      for (const end of [a, b]) spawnSync('ip', ['netns', 'del', end.name], { timeout: COMMAND_TIMEOUT_MS });
      throw e;
    }
    const pair = new NetnsPair(a, b, backend, emulator);
    live.add(pair);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.once('exit', () => { for (const p of live) p.destroySync(); });
    }
    return pair;
  }

  /**
   * Spawns `command args` inside namespace `ns` via `ip netns exec`, which execs the command in
   * place: the returned ChildProcess's pid is the real program, so kill() reaches it.
   */
  spawnIn(ns: NetnsEnd | string, command: string, args: readonly string[] = [], options: SpawnOptions = {}): ChildProcess {
    this.assertLive();
    const name = typeof ns === 'string' ? ns : ns.name;
    if (name !== this.a.name && name !== this.b.name) throw new Error(`${name} is not a namespace of this pair`);
    const child = spawn('ip', ['netns', 'exec', name, command, ...args], options);
    this.spawned.add(child);
    child.once('exit', () => this.spawned.delete(child));
    return child;
  }

  /** Replaces the shape on both directions (each direction gets the full delay: RTT = 2 × delay). */
  async shape(shape: LinkShape): Promise<void> {
    this.assertLive();
    validateShape(shape);
    this.lastShape = { ...shape };
    this.partitioned = false;
    await this.apply(shape);
  }

  /** Drops every packet in both directions; interfaces and routes stay up (see the file header). */
  async partition(): Promise<void> {
    this.assertLive();
    this.partitioned = true;
    await this.apply({ ...this.lastShape, lossPercent: 100 });
  }

  /** Ends a partition: the last shape() (or none) applies again. */
  async heal(): Promise<void> {
    this.assertLive();
    this.partitioned = false;
    await this.apply(this.lastShape);
  }

  get isPartitioned(): boolean {
    return this.partitioned;
  }

  /** Kills every process in both namespaces and deletes them. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const child of this.spawned) child.kill('SIGKILL');
    for (const end of [this.a, this.b]) {
      await killNamespacePids(end.name);
      await ip('netns', 'del', end.name).catch(() => undefined);
    }
    this.emulator?.stop();
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const child of this.spawned) child.kill('SIGKILL');
    for (const end of [this.a, this.b]) {
      const pids = spawnSync('ip', ['netns', 'pids', end.name], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone already */ }
      }
      spawnSync('ip', ['netns', 'del', end.name]);
    }
    this.emulator?.stop();
  }

  private async apply(shape: LinkShape): Promise<void> {
    if (this.emulator) {
      await this.emulator.configure(shape);
      return;
    }
    const args = netemArgs(shape);
    await Promise.all([this.a, this.b].map((end) => tc(end.name, 'qdisc', 'replace', 'dev', end.device, 'root', 'netem', ...args)));
  }

  private assertLive(): void {
    if (this.destroyed) throw new Error(`netns pair ${this.a.name}/${this.b.name} was destroyed`);
  }
}

async function killNamespacePids(ns: string): Promise<void> {
  const pids = (await ip('netns', 'pids', ns).catch(() => '')).split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone already */ }
  }
  const deadline = Date.now() + 5_000;
  while (pids.some(pidAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

/** Deletes `<prefix>-<pid>-<n>-a|b` namespaces whose creating process is gone. */
async function cleanupStale(prefix: string): Promise<void> {
  const listing = await ip('netns', 'list').catch(() => '');
  const pattern = new RegExp(`^(${prefix}-(\\d+)-\\d+-[ab])\\b`);
  for (const line of listing.split('\n')) {
    const match = pattern.exec(line.trim());
    if (!match || Number(match[2]) === process.pid || pidAlive(Number(match[2]))) continue;
    await killNamespacePids(match[1]!);
    await ip('netns', 'del', match[1]!).catch(() => undefined);
  }
}

async function probe(): Promise<NetnsAvailability> {
  if (process.platform !== 'linux') return { available: false, reason: `not Linux (${process.platform})` };
  if (process.getuid?.() !== 0) return { available: false, reason: 'needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for ip netns' };
  const scratch = `tmprobe-${process.pid}`;
  try {
    await ip('netns', 'add', scratch);
  } catch (e) {
    return { available: false, reason: `ip netns add failed: ${(e as Error).message.trim()}` };
  }
  try {
    try {
      await ip('-n', scratch, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1');
    } catch (e) {
      return { available: false, reason: `veth unavailable: ${(e as Error).message.trim()}` };
    }
    let netemError: string;
    try {
      await tc(scratch, 'qdisc', 'add', 'dev', 'probe0', 'root', 'netem', 'delay', '1ms', 'rate', '1000mbit');
      return { available: true, backend: 'netem' };
    } catch (e) {
      netemError = `tc netem failed (${((e as { stderr?: string }).stderr ?? (e as Error).message).trim()}); ` +
        'kernel lacks sch_netem (CONFIG_NET_SCH_NETEM) and it could not be loaded';
    }
    if (!existsSync('/dev/net/tun')) return { available: false, reason: `${netemError}; no /dev/net/tun for the userspace link` };
    const python = spawnSync(PYTHON, ['-c', 'import fcntl, select, struct'], { timeout: COMMAND_TIMEOUT_MS });
    if (python.status !== 0) return { available: false, reason: `${netemError}; no python3 for the userspace link` };
    return { available: true, backend: 'userspace', note: netemError };
  } finally {
    await ip('netns', 'del', scratch).catch(() => undefined);
  }
}

// The userspace link: reads IP packets from two TUN devices and writes each to the other device
// after applying the direction's shape. Controlled by JSON lines on stdin, one "ok" per line on
// stdout; exits when stdin closes.
const EMULATOR_SOURCE = String.raw`
import fcntl, os, struct, select, sys, time, random, json, collections
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454ca, 0x0001, 0x1000
def tun(name):
    fd = os.open('/dev/net/tun', os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', name.encode(), IFF_TUN | IFF_NO_PI))
    return fd
fds = [tun(sys.argv[1]), tun(sys.argv[2])]
shape = {}
class Direction:
    def __init__(self, dst):
        self.dst, self.queue, self.busy_until, self.last = dst, collections.deque(), 0.0, 0.0
dirs = {fds[0]: Direction(fds[1]), fds[1]: Direction(fds[0])}
stdin = sys.stdin.fileno()
os.set_blocking(stdin, False)
pending = b''
print('ready', flush=True)
while True:
    now = time.monotonic()
    due = [d.queue[0][0] for d in dirs.values() if d.queue]
    timeout = max(0.0, min(due) - now) if due else None
    readable, _, _ = select.select([stdin] + fds, [], [], timeout)
    for fd in readable:
        if fd == stdin:
            chunk = os.read(stdin, 65536)
            if not chunk:
                sys.exit(0)
            pending += chunk
            while b'\n' in pending:
                line, pending = pending.split(b'\n', 1)
                shape = json.loads(line)
                print('ok', flush=True)
            continue
        d = dirs[fd]
        for _ in range(256):
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                break
            now = time.monotonic()
            if random.random() * 100 < shape.get('lossPercent', 0):
                continue
            if len(d.queue) >= shape.get('limitPackets', 1000):
                continue
            rate = shape.get('rateMbit', 0)
            start = max(now, d.busy_until)
            d.busy_until = start + (len(packet) * 8 / (rate * 1e6) if rate else 0)
            jitter = shape.get('jitterMs', 0)
            delay = max(0.0, shape.get('delayMs', 0) + (random.uniform(-jitter, jitter) if jitter else 0)) / 1000
            d.last = max(d.last, d.busy_until + delay)
            d.queue.append((d.last, packet))
    now = time.monotonic()
    for d in dirs.values():
        while d.queue and d.queue[0][0] <= now:
            try:
                os.write(d.dst, d.queue.popleft()[1])
            except OSError:
                pass
`;

class LinkEmulator {
  private readonly replies: string[] = [];
  private waiter: (() => void) | undefined;

  private constructor(private readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.replies.push(line);
      this.waiter?.();
    });
  }

  static async start(deviceA: string, deviceB: string): Promise<LinkEmulator> {
    const child = spawn(PYTHON, ['-u', '-c', EMULATOR_SOURCE, deviceA, deviceB], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
    const emulator = new LinkEmulator(child);
    const line = await emulator.nextLine().catch((e: Error) => { throw new Error(`${e.message}: ${stderr}`); });
    if (line !== 'ready') throw new Error(`link emulator did not start: ${line} ${stderr}`);
    return emulator;
  }

  get pid(): number {
    return this.child.pid!;
  }

  async configure(shape: LinkShape): Promise<void> {
    this.child.stdin!.write(`${JSON.stringify(shape)}\n`);
    const line = await this.nextLine();
    if (line !== 'ok') throw new Error(`link emulator replied ${line}`);
  }

  stop(): void {
    this.child.stdin!.end();
    this.child.kill('SIGKILL');
  }

  private async nextLine(): Promise<string> {
    const deadline = Date.now() + COMMAND_TIMEOUT_MS;
    while (this.replies.length === 0) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error('link emulator exited');
      if (Date.now() > deadline) throw new Error('link emulator did not answer');
      // The exit wait is cancelled after each round: left behind, every command added an 'exit'
      // and an 'error' listener to the emulator process (a bench partitioning a dozen times warned).
      const stop = new AbortController();
      try {
        await Promise.race([
          new Promise<void>((r) => { this.waiter = r; }),
          once(this.child, 'exit', { signal: stop.signal }).catch(() => undefined),
          new Promise((r) => setTimeout(r, 100)),
        ]);
      } finally {
        stop.abort();
      }
    }
    return this.replies.shift()!;
  }
}
