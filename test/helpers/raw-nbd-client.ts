// A minimal NBD client over a raw socket, for sending exactly the bytes a test wants — including
// malformed ones no real client would send.
import { connect, type Socket } from 'node:net';

export class RawNbdClient {
  /** Received bytes not yet read, as chunks (joined only when read, so large replies stay linear). */
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static async connect(port: number): Promise<RawNbdClient> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawNbdClient(socket);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Reads exactly n bytes; rejects if the server closes first or after `timeoutMs`. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < n) {
      if (this.closed) throw new Error(`connection closed with ${this.buffered}/${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const take = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, take);
      filled += take;
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
    }
    this.buffered -= n;
    return out;
  }

  /** Resolves true when the server closes the connection within `timeoutMs`. */
  async closedWithin(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return this.closed;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  async greeting(flags = 3): Promise<void> {
    const hello = await this.read(18);
    if (hello.toString('latin1', 0, 8) !== 'NBDMAGIC') throw new Error('bad greeting');
    const f = Buffer.alloc(4);
    f.writeUInt32BE(flags);
    this.write(f);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), lengthOverride?: number): void {
    const header = Buffer.alloc(16);
    header.write('IHAVEOPT', 0, 'latin1');
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(lengthOverride ?? data.length, 12);
    this.write(Buffer.concat([header, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const header = await this.read(20);
    const length = header.readUInt32BE(16);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.read(length) };
  }

  /** NBD_OPT_GO for `name`; returns the export size and transmission flags. */
  async go(name: string): Promise<{ size: bigint; flags: number }> {
    const n = Buffer.from(name);
    const data = Buffer.alloc(4 + n.length + 2);
    data.writeUInt32BE(n.length, 0);
    n.copy(data, 4);
    this.sendOption(7, data);
    let size = -1n;
    let flags = 0;
    for (;;) {
      const reply = await this.optionReply();
      if (reply.type === 3 && reply.data.readUInt16BE(0) === 0) {
        size = reply.data.readBigUInt64BE(2);
        flags = reply.data.readUInt16BE(10);
      } else if (reply.type === 1) {
        return { size, flags };
      } else if (reply.type >= 0x80000000) {
        throw new Error(`GO failed: 0x${reply.type.toString(16)} ${reply.data.toString()}`);
      }
    }
  }

  sendRequest(type: number, cookie: bigint, offset: bigint, length: number, flags = 0, payload?: Buffer): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(0x25609513, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(cookie, 8);
    header.writeBigUInt64BE(offset, 16);
    header.writeUInt32BE(length, 24);
    this.write(payload ? Buffer.concat([header, payload]) : header);
  }

  /** Reads one simple reply; `dataLength` bytes follow a successful READ. */
  async simpleReply(dataLength = 0): Promise<{ error: number; cookie: bigint; data: Buffer }> {
    const header = await this.read(16);
    if (header.readUInt32BE(0) !== 0x67446698) throw new Error('not a simple reply');
    const error = header.readUInt32BE(4);
    return { error, cookie: header.readBigUInt64BE(8), data: error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0) };
  }

  close(): void {
    this.socket.destroy();
  }
}
