// A small NBD client for online imports (SPEC §8): fixed newstyle handshake, NBD_OPT_GO, simple
// replies, READ / WRITE / WRITE_ZEROES / FLUSH. Everything the server sends is checked (magic
// numbers, option replies, cookies, sizes) and bounded (option payloads, requests in flight, one
// timeout per request); any violation or socket failure ends the connection and fails every
// request with TM_ERR_UNAVAILABLE, so a caller never gets bytes it cannot trust.
import { connect, type Socket } from 'node:net';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import {
  ClientFlag, Cmd, HandshakeFlag, IHAVEOPT, Info, MAX_OPTION_BYTES, MAX_PAYLOAD_BYTES, NBDMAGIC, Opt, OPTION_REPLY_MAGIC, Rep,
  REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, TxFlag,
} from '../../core/nbd/constants.js';
import { parseNbdUrl } from '../../core/nbd/nbd-url.js';
import type { ImportSource } from '../../ports/import-source.js';

const CONNECT_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_IN_FLIGHT = 16;
/** Reads and writes larger than this are split (servers commonly cap payloads at 32 MiB). */
const MAX_REQUEST_BYTES = 4 * 1024 * 1024;

const unavailable = (message: string): TidemarkError => new TidemarkError(ErrorCode.Unavailable, message);

/** Bytes from the socket, taken in exact amounts (a small reassembly buffer, no per-byte work). */
class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.serve();
  }

  fail(error: Error): void {
    this.failure ??= error;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }

  take(n: number): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.serve();
    });
  }

  private serve(): void {
    const w = this.waiter;
    if (!w || this.buffered < w.n) return;
    this.waiter = undefined;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const out = all.subarray(0, w.n);
    const rest = all.subarray(w.n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    w.resolve(out);
  }
}

interface Pending {
  readonly type: number;
  readonly length: number;
  readonly resolve: (data: Uint8Array | undefined) => void;
  readonly reject: (error: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

export class NbdClient implements ImportSource {
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private inFlight = 0;
  private readonly slots: Array<() => void> = [];
  private dead: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    readonly sizeBytes: number,
    private readonly flags: number,
    private readonly label: string,
  ) {
    socket.on('error', (e) => this.die(unavailable(`source ${label}: ${e.message}`)));
    socket.on('close', () => this.die(unavailable(`source ${label}: connection closed`)));
    void this.readReplies();
  }

  static async connect(url: string): Promise<NbdClient> {
    const { host, port, exportName } = parseNbdUrl(url);
    const reader = new ByteReader();
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(unavailable(`source ${url}: no connection within ${CONNECT_TIMEOUT_MS} ms`));
      }, CONNECT_TIMEOUT_MS);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(unavailable(`source ${url}: ${e.message}`));
      });
    });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', (e) => reader.fail(unavailable(`source ${url}: ${e.message}`)));
    socket.on('close', () => reader.fail(unavailable(`source ${url}: connection closed`)));
    const handshakeTimer = setTimeout(() => socket.destroy(new Error('handshake timed out')), CONNECT_TIMEOUT_MS);
    try {
      const { sizeBytes, flags } = await handshake(socket, reader, exportName, url);
      return new NbdClient(socket, reader, sizeBytes, flags, url);
    } catch (error) {
      socket.destroy();
      throw error instanceof TidemarkError ? error : unavailable(`source ${url}: ${(error as Error).message}`);
    } finally {
      clearTimeout(handshakeTimer);
    }
  }

  get alive(): boolean {
    return this.dead === undefined;
  }

  get writable(): boolean {
    return (this.flags & TxFlag.ReadOnly) === 0;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkRange(offset, length);
    if (length <= MAX_REQUEST_BYTES) return (await this.request(Cmd.Read, offset, length))!;
    const out = new Uint8Array(length);
    for (let at = 0; at < length; at += MAX_REQUEST_BYTES) {
      const n = Math.min(MAX_REQUEST_BYTES, length - at);
      out.set((await this.request(Cmd.Read, offset + at, n))!, at);
    }
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkRange(offset, data.length);
    this.checkWritable();
    for (let at = 0; at < data.length; at += MAX_REQUEST_BYTES) {
      const part = data.subarray(at, Math.min(data.length, at + MAX_REQUEST_BYTES));
      await this.request(Cmd.Write, offset + at, part.length, part);
    }
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length);
    this.checkWritable();
    const native = (this.flags & TxFlag.SendWriteZeroes) !== 0;
    for (let at = 0; at < length; at += MAX_REQUEST_BYTES) {
      const n = Math.min(MAX_REQUEST_BYTES, length - at);
      if (native) await this.request(Cmd.WriteZeroes, offset + at, n);
      else await this.request(Cmd.Write, offset + at, n, new Uint8Array(n));
    }
  }

  async flush(): Promise<void> {
    if ((this.flags & TxFlag.SendFlush) === 0) return;
    await this.request(Cmd.Flush, 0, 0);
  }

  close(): void {
    this.die(unavailable(`source ${this.label}: closed`));
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new TidemarkError(ErrorCode.OutOfRange, `range ${offset}+${length} is outside source ${this.label} (${this.sizeBytes} bytes)`);
    }
  }

  private checkWritable(): void {
    if (!this.writable) throw new TidemarkError(ErrorCode.VolumeWriteDisabled, `source ${this.label} is read-only`);
  }

  private async request(type: number, offset: number, length: number, data?: Uint8Array): Promise<Uint8Array | undefined> {
    if (this.dead) throw this.dead;
    while (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((resolve) => this.slots.push(resolve));
    if (this.dead) throw this.dead;
    this.inFlight++;
    try {
      const cookie = this.nextCookie++;
      const header = Buffer.alloc(28);
      header.writeUInt32BE(REQUEST_MAGIC, 0);
      header.writeUInt16BE(0, 4);
      header.writeUInt16BE(type, 6);
      header.writeBigUInt64BE(cookie, 8);
      header.writeBigUInt64BE(BigInt(offset), 16);
      header.writeUInt32BE(length, 24);
      const reply = new Promise<Uint8Array | undefined>((resolve, reject) => {
        const timer = setTimeout(() => this.die(unavailable(`source ${this.label}: no reply within ${REQUEST_TIMEOUT_MS} ms`)),
          REQUEST_TIMEOUT_MS);
        this.pending.set(cookie, { type, length, resolve, reject, timer });
      });
      this.socket.cork();
      this.socket.write(header);
      if (data) this.socket.write(data);
      this.socket.uncork();
      return await reply;
    } finally {
      this.inFlight--;
      this.slots.shift()?.();
    }
  }

  private async readReplies(): Promise<void> {
    try {
      for (;;) {
        const header = await this.reader.take(16);
        if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw unavailable(`source ${this.label}: bad reply magic`);
        const error = header.readUInt32BE(4);
        const cookie = header.readBigUInt64BE(8);
        const p = this.pending.get(cookie);
        if (!p) throw unavailable(`source ${this.label}: reply to an unknown request`);
        this.pending.delete(cookie);
        clearTimeout(p.timer);
        if (error !== 0) {
          p.reject(new TidemarkError(ErrorCode.Io, `source ${this.label}: the server failed the request (errno ${error})`));
          continue;
        }
        if (p.type === Cmd.Read) p.resolve(new Uint8Array(await this.reader.take(p.length)));
        else p.resolve(undefined);
      }
    } catch (error) {
      this.die(error as Error);
    }
  }

  private die(error: Error): void {
    if (this.dead) return;
    this.dead = error instanceof TidemarkError ? error : unavailable(`source ${this.label}: ${error.message}`);
    this.reader.fail(this.dead);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.dead);
    }
    this.pending.clear();
    for (const wake of this.slots.splice(0)) wake();
    this.socket.destroy();
  }
}

/** Fixed newstyle negotiation ending in NBD_OPT_GO; returns the export's size and transmission flags. */
async function handshake(socket: Socket, reader: ByteReader, exportName: string, url: string):
  Promise<{ sizeBytes: number; flags: number }> {
  const bad = (why: string): TidemarkError => new TidemarkError(ErrorCode.Unavailable, `source ${url} broke the NBD protocol: ${why}`);
  const greeting = await reader.take(18);
  if (greeting.readBigUInt64BE(0) !== NBDMAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
    throw bad('not a newstyle NBD server');
  }
  const serverFlags = greeting.readUInt16BE(16);
  if ((serverFlags & HandshakeFlag.FixedNewstyle) === 0) throw bad('the server does not speak fixed newstyle');
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(ClientFlag.FixedNewstyle | (serverFlags & HandshakeFlag.NoZeroes ? ClientFlag.NoZeroes : 0));
  const name = Buffer.from(exportName, 'utf8');
  const option = Buffer.alloc(16 + 4 + name.length + 2);
  option.writeBigUInt64BE(IHAVEOPT, 0);
  option.writeUInt32BE(Opt.Go, 8);
  option.writeUInt32BE(4 + name.length + 2, 12);
  option.writeUInt32BE(name.length, 16);
  name.copy(option, 20);
  option.writeUInt16BE(0, 20 + name.length); // no information requests: NBD_INFO_EXPORT always comes
  socket.write(Buffer.concat([clientFlags, option]));
  let size: number | undefined;
  let flags = 0;
  for (;;) {
    const head = await reader.take(20);
    if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw bad('bad option reply magic');
    if (head.readUInt32BE(8) !== Opt.Go) throw bad('a reply to an option not asked');
    const type = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    if (length > MAX_OPTION_BYTES) throw bad(`an option reply of ${length} bytes`);
    const payload = length > 0 ? await reader.take(length) : Buffer.alloc(0);
    if (type === Rep.Ack) break;
    if (type === Rep.Info) {
      if (payload.length < 2) throw bad('a short NBD_REP_INFO');
      if (payload.readUInt16BE(0) === Info.Export) {
        if (payload.length !== 12) throw bad('NBD_INFO_EXPORT of the wrong length');
        const big = payload.readBigUInt64BE(2);
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw bad('an export too large');
        size = Number(big);
        flags = payload.readUInt16BE(10);
      }
      continue;
    }
    if (type >= 0x80000000) {
      const message = payload.toString('utf8').slice(0, 200);
      throw new TidemarkError(type === Rep.ErrUnknown ? ErrorCode.NotFound : ErrorCode.Unavailable,
        `source ${url}: the server refused export ${JSON.stringify(exportName)}${message ? `: ${message}` : ''}`);
    }
    throw bad(`unexpected option reply type ${type}`);
  }
  if (size === undefined) throw bad('NBD_OPT_GO ended without the export\'s size');
  if ((flags & TxFlag.HasFlags) === 0) throw bad('transmission flags without NBD_FLAG_HAS_FLAGS');
  return { sizeBytes: size, flags };
}

export const connectNbdSource = (url: string): Promise<ImportSource> => NbdClient.connect(url);

/** Largest single request this client sends (for callers sizing their reads). */
export const NBD_CLIENT_MAX_REQUEST_BYTES = Math.min(MAX_REQUEST_BYTES, MAX_PAYLOAD_BYTES);
