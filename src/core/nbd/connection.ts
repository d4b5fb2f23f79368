// One NBD connection as a sans-I/O state machine: bytes in, actions out. It runs the fixed-newstyle
// handshake and decodes transmission requests into validated commands; the adapter executes
// commands and encodes replies with ./replies.ts. Protocol violations close the connection.
import { assertNever } from '../lib/assert.js';
import { ByteQueue } from './byte-queue.js';
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, ClientFlag, Cmd, CmdFlag, Errno, IHAVEOPT, Info,
  MAX_OPTION_BYTES, MAX_PAYLOAD_BYTES, MAX_STRING_BYTES, MIN_BLOCK_BYTES, Opt, PREFERRED_BLOCK_BYTES,
  REQUEST_MAGIC, Rep, TxFlag,
} from './constants.js';
import { greeting, optionError, optionReply } from './replies.js';

export interface ExportInfo {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly canFastZero: boolean;
  readonly description: string;
}

/** What the catalog says about an export name. */
export type ExportLookup =
  | { readonly kind: 'found'; readonly info: ExportInfo }
  | { readonly kind: 'refused'; readonly message: string }
  | { readonly kind: 'unknown' };

export interface ExportDirectory {
  list(): ExportInfo[];
  lookup(name: string): ExportLookup;
}

export type Cookie = Uint8Array;

export type NbdCommand =
  | { readonly type: 'read'; readonly cookie: Cookie; readonly offset: number; readonly length: number }
  | { readonly type: 'write'; readonly cookie: Cookie; readonly offset: number; readonly data: Uint8Array; readonly fua: boolean }
  | { readonly type: 'flush'; readonly cookie: Cookie }
  | { readonly type: 'trim'; readonly cookie: Cookie; readonly offset: number; readonly length: number; readonly fua: boolean }
  | {
    readonly type: 'write-zeroes'; readonly cookie: Cookie; readonly offset: number; readonly length: number;
    readonly fua: boolean; readonly noHole: boolean; readonly fastZero: boolean;
  }
  | { readonly type: 'cache'; readonly cookie: Cookie; readonly offset: number; readonly length: number }
  | {
    readonly type: 'block-status'; readonly cookie: Cookie; readonly offset: number; readonly length: number;
    readonly reqOne: boolean; readonly contextId: number;
  }
  /** A request that failed validation: reply with this error (any WRITE payload was consumed). */
  | { readonly type: 'invalid'; readonly cookie: Cookie; readonly errno: Errno; readonly message: string };

export type NbdAction =
  | { readonly kind: 'send'; readonly bytes: Uint8Array }
  | { readonly kind: 'transmission'; readonly export: ExportInfo; readonly structured: boolean }
  | { readonly kind: 'command'; readonly command: NbdCommand }
  /** NBD_CMD_DISC or NBD_OPT_ABORT: finish outstanding replies, then close. */
  | { readonly kind: 'disconnect' }
  /** Protocol violation: close at once. */
  | { readonly kind: 'close'; readonly reason: string };

type Phase = 'client-flags' | 'option-header' | 'option-data' | 'request-header' | 'write-payload' | 'done';

interface PendingWrite {
  readonly cookie: Cookie;
  readonly offset: number;
  readonly length: number;
  readonly fua: boolean;
  readonly errno?: Errno;
  readonly message?: string;
}

const decoder = new TextDecoder('utf-8', { fatal: true });
/** A real copy even when handed a Node Buffer (whose slice() is a view). */
const copyOf = (bytes: Uint8Array): Uint8Array => Uint8Array.prototype.slice.call(bytes);
const viewOf = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
const encoder = new TextEncoder();
const KNOWN_CMD_FLAGS = CmdFlag.Fua | CmdFlag.NoHole | CmdFlag.Df | CmdFlag.ReqOne | CmdFlag.FastZero;

export class NbdConnection {
  private readonly queue = new ByteQueue();
  private phase: Phase = 'client-flags';
  private fixedNewstyle = false;
  private noZeroes = false;
  private structured = false;
  private option = 0;
  private optionLength = 0;
  /** Export name the SET_META_CONTEXT selection is bound to, if base:allocation was selected. */
  private metaExport: string | undefined;
  private current: ExportInfo | undefined;
  private txFlags = 0;
  private pendingWrite: PendingWrite | undefined;
  /** Payload bytes of a rejected WRITE already discarded. */
  private droppedBytes: number | undefined;
  private out: NbdAction[] = [];

  constructor(private readonly directory: ExportDirectory) {}

  /** The first bytes the server sends. */
  start(): NbdAction[] {
    return [{ kind: 'send', bytes: greeting() }];
  }

  get structuredReplies(): boolean {
    return this.structured;
  }

  get transmissionFlags(): number {
    return this.txFlags;
  }

  /** Feeds received bytes; returns what the adapter must do, in order. */
  receive(chunk: Uint8Array): NbdAction[] {
    this.queue.push(chunk);
    this.out = [];
    while (this.phase !== 'done' && this.step()) { /* keep parsing */ }
    return this.out;
  }

  private emit(action: NbdAction): void {
    this.out.push(action);
  }

  private fail(reason: string): false {
    this.phase = 'done';
    this.emit({ kind: 'close', reason });
    return false;
  }

  /** Parses one unit; false when more bytes are needed or the connection ended. */
  private step(): boolean {
    switch (this.phase) {
      case 'client-flags': return this.readClientFlags();
      case 'option-header': return this.readOptionHeader();
      case 'option-data': return this.readOptionData();
      case 'request-header': return this.readRequestHeader();
      case 'write-payload': return this.readWritePayload();
      case 'done': return false;
      default: return assertNever(this.phase, 'phase');
    }
  }

  private readClientFlags(): boolean {
    if (this.queue.length < 4) return false;
    const flags = viewOf(this.queue.take(4)).getUint32(0);
    if ((flags & ~(ClientFlag.FixedNewstyle | ClientFlag.NoZeroes)) !== 0) return this.fail(`unknown client flags 0x${flags.toString(16)}`);
    this.fixedNewstyle = (flags & ClientFlag.FixedNewstyle) !== 0;
    this.noZeroes = (flags & ClientFlag.NoZeroes) !== 0;
    this.phase = 'option-header';
    return true;
  }

  private readOptionHeader(): boolean {
    if (this.queue.length < 16) return false;
    const view = viewOf(this.queue.take(16));
    if (view.getBigUint64(0) !== IHAVEOPT) return this.fail('bad option magic');
    this.option = view.getUint32(8);
    this.optionLength = view.getUint32(12);
    if (this.optionLength > MAX_OPTION_BYTES) return this.fail(`option length ${this.optionLength} exceeds ${MAX_OPTION_BYTES}`);
    if (!this.fixedNewstyle && this.option !== Opt.ExportName) return this.fail('only EXPORT_NAME is valid without fixed newstyle');
    this.phase = 'option-data';
    return true;
  }

  private readOptionData(): boolean {
    if (this.queue.length < this.optionLength) return false;
    const data = copyOf(this.queue.take(this.optionLength));
    this.phase = 'option-header';
    this.handleOption(this.option, data);
    return (this.phase as Phase) !== 'done';
  }

  private reply(type: number, payload?: Uint8Array): void {
    this.emit({ kind: 'send', bytes: optionReply(this.option, type, payload) });
  }

  private replyError(type: number, message: string): void {
    this.emit({ kind: 'send', bytes: optionError(this.option, type, message) });
  }

  private handleOption(option: number, data: Uint8Array): void {
    switch (option) {
      case Opt.ExportName: return this.exportName(data);
      case Opt.Abort:
        this.reply(Rep.Ack);
        this.phase = 'done';
        this.emit({ kind: 'disconnect' });
        return;
      case Opt.List: return this.list(data);
      case Opt.Info:
      case Opt.Go: return this.infoOrGo(option === Opt.Go, data);
      case Opt.StructuredReply:
        if (data.length !== 0) return this.replyError(Rep.ErrInvalid, 'STRUCTURED_REPLY takes no data');
        this.structured = true;
        return this.reply(Rep.Ack);
      case Opt.ListMetaContext:
      case Opt.SetMetaContext: return this.metaContext(option === Opt.SetMetaContext, data);
      case Opt.StartTls: return this.replyError(Rep.ErrUnsup, 'TLS is not configured on this server');
      default: return this.replyError(Rep.ErrUnsup, `option ${option} is not supported`);
    }
  }

  private flagsFor(info: ExportInfo): number {
    let flags = TxFlag.HasFlags | TxFlag.SendFlush | TxFlag.SendFua | TxFlag.SendTrim | TxFlag.SendWriteZeroes |
      TxFlag.SendCache | TxFlag.CanMultiConn;
    if (this.structured) flags |= TxFlag.SendDf;
    if (info.canFastZero) flags |= TxFlag.SendFastZero;
    if (info.readOnly) flags |= TxFlag.ReadOnly;
    return flags;
  }

  private decodeName(bytes: Uint8Array): string | undefined {
    if (bytes.length > MAX_STRING_BYTES) return undefined;
    try {
      return decoder.decode(bytes);
    } catch {
      return undefined;
    }
  }

  private exportName(data: Uint8Array): void {
    const name = this.decodeName(data);
    const found = name === undefined ? undefined : this.directory.lookup(name);
    if (!found || found.kind !== 'found') {
      // EXPORT_NAME cannot carry an error: the spec says close.
      this.fail(`export ${JSON.stringify(name)} ${found?.kind === 'refused' ? 'refused' : 'unknown'}`);
      return;
    }
    const flags = this.flagsFor(found.info);
    const out = new Uint8Array(this.noZeroes ? 10 : 134);
    const view = new DataView(out.buffer);
    view.setBigUint64(0, BigInt(found.info.sizeBytes));
    view.setUint16(8, flags);
    this.emit({ kind: 'send', bytes: out });
    this.enterTransmission(found.info, flags);
  }

  private enterTransmission(info: ExportInfo, flags: number): void {
    this.current = info;
    this.txFlags = flags;
    if (this.metaExport !== info.name) this.metaExport = undefined;
    this.phase = 'request-header';
    this.emit({ kind: 'transmission', export: info, structured: this.structured });
  }

  private list(data: Uint8Array): void {
    if (data.length !== 0) return this.replyError(Rep.ErrInvalid, 'LIST takes no data');
    for (const info of this.directory.list()) {
      const name = encoder.encode(info.name);
      const description = encoder.encode(info.description).subarray(0, 256);
      const payload = new Uint8Array(4 + name.length + description.length);
      new DataView(payload.buffer).setUint32(0, name.length);
      payload.set(name, 4);
      payload.set(description, 4 + name.length);
      this.reply(Rep.Server, payload);
    }
    this.reply(Rep.Ack);
  }

  private infoOrGo(go: boolean, data: Uint8Array): void {
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (data.length < 6) return this.replyError(Rep.ErrInvalid, 'malformed INFO/GO request');
    const nameLength = view.getUint32(0);
    if (nameLength > data.length - 6) return this.replyError(Rep.ErrInvalid, 'malformed INFO/GO request');
    const requests = view.getUint16(4 + nameLength);
    if (data.length !== 4 + nameLength + 2 + 2 * requests) return this.replyError(Rep.ErrInvalid, 'malformed INFO/GO request');
    const name = this.decodeName(data.subarray(4, 4 + nameLength));
    if (name === undefined) return this.replyError(Rep.ErrInvalid, 'export name is not valid UTF-8');
    const wanted = new Set<number>();
    for (let i = 0; i < requests; i++) wanted.add(view.getUint16(4 + nameLength + 2 + 2 * i));
    const found = this.directory.lookup(name);
    if (found.kind === 'unknown') return this.replyError(Rep.ErrUnknown, `no export named ${JSON.stringify(name)}`);
    if (found.kind === 'refused') return this.replyError(Rep.ErrPolicy, found.message);
    const info = found.info;
    const flags = this.flagsFor(info);
    const exportInfo = new Uint8Array(12);
    const ev = new DataView(exportInfo.buffer);
    ev.setUint16(0, Info.Export);
    ev.setBigUint64(2, BigInt(info.sizeBytes));
    ev.setUint16(10, flags);
    this.reply(Rep.Info, exportInfo);
    const blockSize = new Uint8Array(14);
    const bv = new DataView(blockSize.buffer);
    bv.setUint16(0, Info.BlockSize);
    bv.setUint32(2, MIN_BLOCK_BYTES);
    bv.setUint32(6, PREFERRED_BLOCK_BYTES);
    bv.setUint32(10, MAX_PAYLOAD_BYTES);
    this.reply(Rep.Info, blockSize);
    if (wanted.has(Info.Name)) this.reply(Rep.Info, this.infoString(Info.Name, info.name));
    if (wanted.has(Info.Description) && info.description) this.reply(Rep.Info, this.infoString(Info.Description, info.description));
    this.reply(Rep.Ack);
    if (go) this.enterTransmission(info, flags);
  }

  private infoString(type: number, text: string): Uint8Array {
    const bytes = encoder.encode(text).subarray(0, MAX_STRING_BYTES);
    const out = new Uint8Array(2 + bytes.length);
    new DataView(out.buffer).setUint16(0, type);
    out.set(bytes, 2);
    return out;
  }

  private metaContext(set: boolean, data: Uint8Array): void {
    if (set) this.metaExport = undefined; // SET replaces the selection even when it fails
    if (set && !this.structured) return this.replyError(Rep.ErrInvalid, 'SET_META_CONTEXT needs structured replies');
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const malformed = (): void => this.replyError(Rep.ErrInvalid, 'malformed meta context request');
    if (data.length < 8) return malformed();
    const nameLength = view.getUint32(0);
    if (nameLength > data.length - 8) return malformed();
    const name = this.decodeName(data.subarray(4, 4 + nameLength));
    if (name === undefined) return malformed();
    let at = 4 + nameLength;
    const count = view.getUint32(at);
    at += 4;
    const queries: string[] = [];
    for (let i = 0; i < count; i++) {
      if (at + 4 > data.length) return malformed();
      const length = view.getUint32(at);
      at += 4;
      if (length > data.length - at) return malformed();
      const query = this.decodeName(data.subarray(at, at + length));
      if (query === undefined) return malformed();
      queries.push(query);
      at += length;
    }
    if (at !== data.length) return malformed();
    const found = this.directory.lookup(name);
    if (found.kind === 'unknown') return this.replyError(Rep.ErrUnknown, `no export named ${JSON.stringify(name)}`);
    const matches = set
      ? queries.includes(BASE_ALLOCATION)
      : count === 0 || queries.includes(BASE_ALLOCATION) || queries.includes('base:');
    if (matches) {
      const context = encoder.encode(BASE_ALLOCATION);
      const payload = new Uint8Array(4 + context.length);
      new DataView(payload.buffer).setUint32(0, set ? BASE_ALLOCATION_ID : 0);
      payload.set(context, 4);
      this.reply(Rep.MetaContext, payload);
      if (set) this.metaExport = name;
    }
    this.reply(Rep.Ack);
  }

  // ---- transmission ----

  private readRequestHeader(): boolean {
    if (this.queue.length < 28) return false;
    const header = this.queue.take(28);
    const view = new DataView(header.buffer, header.byteOffset, 28);
    if (view.getUint32(0) !== REQUEST_MAGIC) return this.fail('bad request magic');
    const flags = view.getUint16(4);
    const type = view.getUint16(6);
    const cookie = copyOf(header.subarray(8, 16));
    const offset64 = view.getBigUint64(16);
    const length = view.getUint32(24);
    const info = this.current!;
    const end = offset64 + BigInt(length);
    const inside = end <= BigInt(info.sizeBytes);
    const offset = inside ? Number(offset64) : -1;
    const invalid = (errno: Errno, message: string): boolean => {
      this.emit({ kind: 'command', command: { type: 'invalid', cookie, errno, message } });
      return true;
    };
    const flagsOk = (allowed: number): boolean => (flags & ~(allowed | CmdFlag.Fua)) === 0 && (flags & ~KNOWN_CMD_FLAGS) === 0;

    if (type === Cmd.Write) {
      if (length > MAX_PAYLOAD_BYTES) return this.fail(`write of ${length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
      let errno: Errno | undefined;
      let message: string | undefined;
      if (!flagsOk(0)) [errno, message] = [Errno.EINVAL, 'invalid flags for WRITE'];
      else if (info.readOnly) [errno, message] = [Errno.EPERM, 'export is read-only'];
      else if (!inside) [errno, message] = [Errno.ENOSPC, 'write past the end of the export'];
      this.pendingWrite = { cookie, offset, length, fua: (flags & CmdFlag.Fua) !== 0, errno, message };
      this.phase = 'write-payload';
      return true;
    }
    switch (type) {
      case Cmd.Read:
        if (!flagsOk(this.structured ? CmdFlag.Df : 0)) return invalid(Errno.EINVAL, 'invalid flags for READ');
        if (!inside) return invalid(Errno.EINVAL, 'read past the end of the export');
        if (length > MAX_PAYLOAD_BYTES) return invalid(Errno.EINVAL, `read of ${length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
        this.emit({ kind: 'command', command: { type: 'read', cookie, offset, length } });
        return true;
      case Cmd.Disc:
        this.phase = 'done';
        this.emit({ kind: 'disconnect' });
        return false;
      case Cmd.Flush:
        if (!flagsOk(0)) return invalid(Errno.EINVAL, 'invalid flags for FLUSH');
        this.emit({ kind: 'command', command: { type: 'flush', cookie } });
        return true;
      case Cmd.Trim:
        if (!flagsOk(0)) return invalid(Errno.EINVAL, 'invalid flags for TRIM');
        if (info.readOnly) return invalid(Errno.EPERM, 'export is read-only');
        if (!inside) return invalid(Errno.EINVAL, 'trim past the end of the export');
        this.emit({ kind: 'command', command: { type: 'trim', cookie, offset, length, fua: (flags & CmdFlag.Fua) !== 0 } });
        return true;
      case Cmd.WriteZeroes: {
        if (!flagsOk(CmdFlag.NoHole | CmdFlag.FastZero)) return invalid(Errno.EINVAL, 'invalid flags for WRITE_ZEROES');
        const fastZero = (flags & CmdFlag.FastZero) !== 0;
        if (fastZero && !info.canFastZero) return invalid(Errno.EINVAL, 'FAST_ZERO was not advertised');
        if (info.readOnly) return invalid(Errno.EPERM, 'export is read-only');
        if (!inside) return invalid(Errno.ENOSPC, 'write past the end of the export');
        this.emit({
          kind: 'command',
          command: {
            type: 'write-zeroes', cookie, offset, length, fua: (flags & CmdFlag.Fua) !== 0,
            noHole: (flags & CmdFlag.NoHole) !== 0, fastZero,
          },
        });
        return true;
      }
      case Cmd.Cache:
        if (!flagsOk(0)) return invalid(Errno.EINVAL, 'invalid flags for CACHE');
        if (!inside) return invalid(Errno.EINVAL, 'cache past the end of the export');
        this.emit({ kind: 'command', command: { type: 'cache', cookie, offset, length } });
        return true;
      case Cmd.BlockStatus:
        if (!flagsOk(CmdFlag.ReqOne)) return invalid(Errno.EINVAL, 'invalid flags for BLOCK_STATUS');
        if (!this.structured || this.metaExport !== info.name) return invalid(Errno.EINVAL, 'no metadata context selected');
        if (!inside || length === 0) return invalid(Errno.EINVAL, 'block status range outside the export');
        this.emit({
          kind: 'command',
          command: { type: 'block-status', cookie, offset, length, reqOne: (flags & CmdFlag.ReqOne) !== 0, contextId: BASE_ALLOCATION_ID },
        });
        return true;
      default:
        return invalid(Errno.EINVAL, `unknown command ${type}`);
    }
  }

  private readWritePayload(): boolean {
    const write = this.pendingWrite!;
    if (write.errno !== undefined) {
      // Consume and drop the payload as it arrives, so a rejected write never buffers in full.
      const need = write.length - (this.droppedBytes ?? 0);
      const dropped = this.queue.skip(need);
      this.droppedBytes = (this.droppedBytes ?? 0) + dropped;
      if (this.droppedBytes < write.length) return false;
      this.droppedBytes = undefined;
      this.pendingWrite = undefined;
      this.phase = 'request-header';
      this.emit({ kind: 'command', command: { type: 'invalid', cookie: write.cookie, errno: write.errno, message: write.message ?? '' } });
      return true;
    }
    if (this.queue.length < write.length) return false;
    const data = this.queue.take(write.length);
    this.pendingWrite = undefined;
    this.phase = 'request-header';
    this.emit({ kind: 'command', command: { type: 'write', cookie: write.cookie, offset: write.offset, data, fua: write.fua } });
    return true;
  }

  /** Bytes still needed to complete the current WRITE payload (for bounded buffering). */
  get pendingPayloadBytes(): number {
    return this.pendingWrite ? this.pendingWrite.length : 0;
  }
}
