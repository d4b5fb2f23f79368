// One NBD connection as a sans-I/O state machine. The adapter feeds received bytes with receive()
// and pulls actions with poll(): bytes to send, validated commands to execute, disconnect or close.
// Parsing is lazy — poll() decodes only as far as the next action — so the adapter bounds the
// commands in flight simply by not polling, and unread requests stay unparsed bytes.
import { assertNever } from '../lib/assert.js';
import { ByteQueue } from './byte-queue.js';
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, ClientFlag, Errno, IHAVEOPT, Info, MAX_OPTION_BYTES, MAX_PAYLOAD_BYTES,
  MIN_BLOCK_BYTES, Opt, PREFERRED_BLOCK_BYTES, Rep, TxFlag,
} from './constants.js';
import { decodeString, parseInfoRequest, parseMetaContextRequest } from './option-parsing.js';
import {
  exportNameReply, greeting, infoBlockSizePayload, infoExportPayload, infoStringPayload, metaContextPayload,
  optionError, optionReply, serverPayload,
} from './replies.js';
import { decodeRequest, REQUEST_HEADER_BYTES, type Cookie, type NbdCommand, type TransmissionContext } from './request-decoding.js';

export type { Cookie, NbdCommand } from './request-decoding.js';

export interface ExportInfo {
  /** Canonical name (the default export "" resolves to a real name). */
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly canFastZero: boolean;
  readonly description: string;
  /**
   * Client names (from a verified TLS client certificate) that may use this export; undefined or
   * empty: any client that got through the handshake.
   */
  readonly allowedClients?: readonly string[] | undefined;
}

/**
 * off: STARTTLS is unsupported. optional: plain and TLS clients are both served. require: nothing
 * but STARTTLS and ABORT before TLS (NBD "FORCEDTLS").
 */
export type NbdTlsMode = 'off' | 'optional' | 'require';

export interface NbdConnectionOptions {
  readonly tls: NbdTlsMode;
  /**
   * Set when the server takes no new connections (e.g. its reply buffers are at their cap): every
   * option but ABORT is answered NBD_REP_ERR_SHUTDOWN with this message; EXPORT_NAME closes.
   */
  readonly refusal?: string | undefined;
  /**
   * Makes the buffer a write's payload is gathered into; every byte is overwritten before the write
   * is emitted, so the adapter may hand out uninitialised memory (zero-filling 256 KiB payloads was
   * 8 % of the event loop's time under sequential writes). Default: a zeroed Uint8Array.
   */
  readonly allocatePayload?: (length: number) => Uint8Array;
}

/** Largest piece of a streamed WRITE (one longer than MAX_PAYLOAD_BYTES from a client that did not negotiate block sizes). */
export const WRITE_PIECE_BYTES = 4 * 1024 * 1024;

/** What the catalog says about a requested export name. */
export type ExportLookup =
  | { readonly kind: 'found'; readonly info: ExportInfo }
  /** Exists but may not be used now (e.g. not ready): NBD_REP_ERR_POLICY with this message. */
  | { readonly kind: 'refused'; readonly message: string }
  | { readonly kind: 'unknown' };

/** The injected, synchronous view of the exports. */
export interface ExportDirectory {
  list(): ExportInfo[];
  lookup(name: string): ExportLookup;
}

export type NbdAction =
  | { readonly kind: 'send'; readonly bytes: Uint8Array }
  /** Option haggling is over: serve `export` with these transmission flags. */
  | { readonly kind: 'transmission'; readonly export: ExportInfo; readonly structured: boolean; readonly flags: number }
  | { readonly kind: 'command'; readonly command: NbdCommand }
  /**
   * STARTTLS was acknowledged (the ACK is the 'send' before this): once it has been flushed, run
   * the TLS handshake on the socket and call tlsEstablished() — or close if it fails.
   */
  | { readonly kind: 'starttls' }
  /** A client was refused an export by its allow-list (answered ERR_POLICY); for the log. */
  | { readonly kind: 'access-denied'; readonly export: string; readonly clientNames: readonly string[] }
  /** NBD_CMD_DISC or NBD_OPT_ABORT: send the outstanding replies, then close. */
  | { readonly kind: 'disconnect' }
  /** Protocol violation (or a failed EXPORT_NAME): close at once. */
  | { readonly kind: 'close'; readonly reason: string };

type Phase =
  | 'client-flags' | 'option-header' | 'option-data' | 'tls-pending'
  | 'request-header' | 'write-payload' | 'write-discard' | 'done';

interface WriteInProgress {
  readonly cookie: Cookie;
  /** Offset of `data` (the current piece). */
  readonly offset: number;
  readonly fua: boolean;
  /** Allocated once the header has been validated; filled as payload bytes arrive. */
  readonly data: Uint8Array;
  filled: number;
  /** Payload bytes after this piece (streamed writes only). */
  readonly remainingAfter: number;
  /** Set for a write streamed in pieces. */
  readonly stream: number | undefined;
}

interface WriteDiscard {
  readonly cookie: Cookie;
  readonly errno: Errno;
  readonly message: string;
  remaining: number;
}

export class NbdConnection {
  private readonly queue: ByteQueue;
  private readonly actions: NbdAction[] = [];
  private phase: Phase = 'client-flags';
  private fixedNewstyle = false;
  private noZeroes = false;
  private structured = false;
  private option = 0;
  private optionLength = 0;
  /** Canonical export name SET_META_CONTEXT bound base:allocation to, if it selected it. */
  private allocationExport: string | undefined;
  /** GO asked for NBD_INFO_BLOCK_SIZE: the client promised to keep within MAX_PAYLOAD_BYTES. */
  private blockSizeNegotiated = false;
  private tlsActive = false;
  /** Names from the verified client certificate (empty without one). */
  private clientNames: readonly string[] = [];
  private nextStream = 1;
  /** What request validation needs of the export in transmission (fixed once transmission begins). */
  private transmission: TransmissionContext | undefined;
  private write: WriteInProgress | undefined;
  private discard: WriteDiscard | undefined;

  private readonly options: NbdConnectionOptions;
  private readonly allocatePayload: (length: number) => Uint8Array;

  constructor(private readonly directory: ExportDirectory, options: NbdConnectionOptions = { tls: 'off' }) {
    this.options = options;
    this.allocatePayload = options.allocatePayload ?? ((length) => new Uint8Array(length));
    this.queue = new ByteQueue(this.allocatePayload);
    this.actions.push({ kind: 'send', bytes: greeting() });
  }

  /** TLS is running on the connection (after STARTTLS and a completed TLS handshake). */
  get tls(): boolean {
    return this.tlsActive;
  }

  /**
   * The TLS handshake after STARTTLS completed; `clientNames` are the names of the verified client
   * certificate (CN and subjectAltNames), empty without one. Negotiation starts over.
   */
  tlsEstablished(clientNames: readonly string[]): void {
    if (this.phase !== 'tls-pending') throw new Error(`tlsEstablished in phase ${this.phase}`);
    // Bytes that arrived in clear after STARTTLS were sent before TLS and must not be read as if
    // they came over it (the STARTTLS command-injection attack): refuse the connection.
    if (this.queue.length > 0) {
      this.fail(`${this.queue.length} plain-text bytes followed STARTTLS`);
      return;
    }
    this.tlsActive = true;
    this.clientNames = [...clientNames];
    // The spec: forget everything negotiated before TLS.
    this.structured = false;
    this.allocationExport = undefined;
    this.blockSizeNegotiated = false;
    this.phase = 'option-header';
  }

  /** Queues received bytes; nothing is parsed until poll(). */
  receive(chunk: Uint8Array): void {
    if (this.phase !== 'done') this.queue.push(chunk);
  }

  /**
   * Like receive(), for bytes in a buffer the adapter reads into again: the adapter polls, then
   * calls endLoan(), after which nothing the machine keeps (a write's payload, unparsed bytes) is a
   * view into `chunk`.
   */
  receiveLent(chunk: Uint8Array): void {
    if (this.phase !== 'done') this.queue.pushLent(chunk);
  }

  /** See receiveLent(). */
  endLoan(): void {
    this.queue.endLoan();
  }

  /** The next action, decoding as few bytes as needed; undefined when more bytes are needed or the connection ended. */
  poll(): NbdAction | undefined {
    while (this.actions.length === 0 && this.step()) { /* decode until an action or a stall */ }
    return this.actions.shift();
  }

  /**
   * The unfilled rest of the WRITE payload being gathered, when no other received bytes are queued:
   * the adapter may read the socket straight into it (then tell payloadFilled how much it read)
   * rather than read into a buffer of its own and have the bytes copied here.
   */
  payloadSpace(): Uint8Array | undefined {
    const write = this.write;
    if (this.phase !== 'write-payload' || write === undefined || this.queue.length !== 0 || write.filled >= write.data.length) return undefined;
    return write.data.subarray(write.filled);
  }

  /**
   * How many bytes the next request header still lacks, when a header is what comes next and nothing
   * else is queued. An adapter expecting another large WRITE reads just those: the payload behind
   * them then goes straight into payloadSpace() instead of being copied out of a shared buffer.
   */
  requestHeaderMissing(): number | undefined {
    if (this.phase !== 'request-header' || this.queue.length >= REQUEST_HEADER_BYTES) return undefined;
    return REQUEST_HEADER_BYTES - this.queue.length;
  }

  /** `count` bytes were read into payloadSpace(); the next poll() decides what they complete. */
  payloadFilled(count: number): void {
    const space = this.payloadSpace();
    if (space === undefined || count > space.length) throw new RangeError(`payloadFilled(${count}) with ${space?.length ?? 0} bytes of payload space`);
    this.write!.filled += count;
  }

  /** Received bytes not yet decoded. */
  get bufferedBytes(): number {
    return this.queue.length;
  }

  /** True once the connection has ended (DISC, ABORT or a violation); later bytes are ignored. */
  get ended(): boolean {
    return this.phase === 'done';
  }

  private emit(action: NbdAction): void {
    this.actions.push(action);
  }

  private fail(reason: string): false {
    this.phase = 'done';
    this.emit({ kind: 'close', reason });
    return false;
  }

  /** Decodes one unit; false when more bytes are needed or the connection ended. */
  private step(): boolean {
    switch (this.phase) {
      case 'client-flags': return this.readClientFlags();
      case 'option-header': return this.readOptionHeader();
      case 'option-data': return this.readOptionData();
      case 'tls-pending': return false;
      case 'request-header': return this.readRequestHeader();
      case 'write-payload': return this.readWritePayload();
      case 'write-discard': return this.discardWritePayload();
      case 'done': return false;
      default: return assertNever(this.phase, 'phase');
    }
  }

  // ---- handshake ----

  private readClientFlags(): boolean {
    if (this.queue.length < 4) return false;
    const bytes = this.queue.take(4);
    const flags = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
    if ((flags & ~(ClientFlag.FixedNewstyle | ClientFlag.NoZeroes)) !== 0) return this.fail(`unknown client flags 0x${flags.toString(16)}`);
    this.fixedNewstyle = (flags & ClientFlag.FixedNewstyle) !== 0;
    this.noZeroes = (flags & ClientFlag.NoZeroes) !== 0;
    this.phase = 'option-header';
    return true;
  }

  private readOptionHeader(): boolean {
    if (this.queue.length < 16) return false;
    const bytes = this.queue.take(16);
    const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
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
    const data = Uint8Array.prototype.slice.call(this.queue.take(this.optionLength));
    this.phase = 'option-header';
    this.handleOption(data);
    return true;
  }

  private reply(type: number, payload?: Uint8Array): void {
    this.emit({ kind: 'send', bytes: optionReply(this.option, type, payload) });
  }

  private replyError(type: number, message: string): void {
    this.emit({ kind: 'send', bytes: optionError(this.option, type, message) });
  }

  private handleOption(data: Uint8Array): void {
    const gate = optionGate(this.option, {
      tls: this.options.tls, tlsActive: this.tlsActive, refusing: this.options.refusal !== undefined,
    });
    switch (gate) {
      case 'allow': break;
      case 'close': return void this.fail(this.options.refusal ?? 'EXPORT_NAME before STARTTLS on a server that requires TLS');
      case 'tls-required': return this.replyError(Rep.ErrTlsReqd, 'this server requires TLS: use STARTTLS first');
      case 'shutdown': return this.replyError(Rep.ErrShutdown, this.options.refusal ?? 'server is not taking connections');
      default: return assertNever(gate, 'option gate');
    }
    switch (this.option) {
      case Opt.ExportName: return this.exportName(data);
      case Opt.Abort:
        this.reply(Rep.Ack);
        this.phase = 'done';
        this.emit({ kind: 'disconnect' });
        return;
      case Opt.List: return this.list(data);
      case Opt.Info: return this.infoOrGo(false, data);
      case Opt.Go: return this.infoOrGo(true, data);
      case Opt.StructuredReply:
        if (data.length !== 0) return this.replyError(Rep.ErrInvalid, 'STRUCTURED_REPLY takes no data');
        this.structured = true; // a repeat is answered with ACK again: friendlier than ERR_INVALID
        return this.reply(Rep.Ack);
      case Opt.ListMetaContext: return this.listMetaContext(data);
      case Opt.SetMetaContext: return this.setMetaContext(data);
      case Opt.StartTls: return this.startTls(data);
      default: return this.replyError(Rep.ErrUnsup, `option ${this.option} is not supported`);
    }
  }

  private startTls(data: Uint8Array): void {
    if (data.length !== 0) return this.replyError(Rep.ErrInvalid, 'STARTTLS takes no data');
    if (this.options.tls === 'off') return this.replyError(Rep.ErrUnsup, 'TLS is not configured on this server');
    if (this.tlsActive) return this.replyError(Rep.ErrInvalid, 'TLS is already active');
    this.reply(Rep.Ack);
    this.phase = 'tls-pending';
    this.emit({ kind: 'starttls' });
  }

  /** Whether this connection's client may use `info`; false after answering ERR_POLICY. */
  private admitted(info: ExportInfo): boolean {
    if (clientMayUse(info, this.clientNames)) return true;
    // Before TLS the client has no name yet: tell it TLS is what it lacks (the spec's SELECTIVETLS).
    if (!this.tlsActive && this.options.tls !== 'off') {
      this.replyError(Rep.ErrTlsReqd, `volume ${info.name} is limited to named clients: use TLS with a client certificate`);
    } else {
      this.replyError(Rep.ErrPolicy, `volume ${info.name} is not available to this client`);
    }
    this.emit({ kind: 'access-denied', export: info.name, clientNames: this.clientNames });
    return false;
  }

  /** Transmission flags, computed per connection: DF only with structured replies. */
  private flagsFor(info: ExportInfo): number {
    let flags = TxFlag.HasFlags | TxFlag.SendFlush | TxFlag.SendFua | TxFlag.SendTrim | TxFlag.SendWriteZeroes |
      TxFlag.SendCache | TxFlag.CanMultiConn;
    if (this.structured) flags |= TxFlag.SendDf;
    if (info.canFastZero) flags |= TxFlag.SendFastZero;
    if (info.readOnly) flags |= TxFlag.ReadOnly;
    return flags;
  }

  private exportName(data: Uint8Array): void {
    const name = decodeString(data);
    const found = name === undefined ? undefined : this.directory.lookup(name);
    if (found?.kind !== 'found') {
      // EXPORT_NAME has no way to carry an error: the spec says close.
      this.fail(`EXPORT_NAME ${JSON.stringify(name ?? '<invalid>')}: ${found?.kind === 'refused' ? found.message : 'unknown export'}`);
      return;
    }
    if (!clientMayUse(found.info, this.clientNames)) {
      this.emit({ kind: 'access-denied', export: found.info.name, clientNames: this.clientNames });
      this.fail(`EXPORT_NAME ${JSON.stringify(name)}: not available to this client`);
      return;
    }
    const flags = this.flagsFor(found.info);
    this.emit({ kind: 'send', bytes: exportNameReply(found.info.sizeBytes, flags, this.noZeroes) });
    this.enterTransmission(found.info, flags);
  }

  private enterTransmission(info: ExportInfo, flags: number): void {
    const bound = this.structured && this.allocationExport === info.name;
    this.transmission = {
      sizeBytes: info.sizeBytes, readOnly: info.readOnly, structured: this.structured,
      canFastZero: info.canFastZero, allocationContextId: bound ? BASE_ALLOCATION_ID : undefined,
      // The spec: a server SHOULD accept requests up to the export size from a client that did not
      // negotiate block sizes; large writes are then streamed in pieces (readWritePayload).
      maxPayloadBytes: this.blockSizeNegotiated ? MAX_PAYLOAD_BYTES : info.sizeBytes,
    };
    this.phase = 'request-header';
    this.emit({ kind: 'transmission', export: info, structured: this.structured, flags });
  }

  private list(data: Uint8Array): void {
    if (data.length !== 0) return this.replyError(Rep.ErrInvalid, 'LIST takes no data');
    for (const info of this.directory.list().filter((i) => clientMayUse(i, this.clientNames))) this.reply(Rep.Server, serverPayload(info.name, info.description));
    this.reply(Rep.Ack);
  }

  /** The export a request names, or false after answering the error. */
  private lookupOrReply(name: string): ExportInfo | false {
    const found = this.directory.lookup(name);
    switch (found.kind) {
      case 'found': return this.admitted(found.info) && found.info;
      case 'refused':
        this.replyError(Rep.ErrPolicy, found.message);
        return false;
      case 'unknown':
        this.replyError(Rep.ErrUnknown, `no export named ${JSON.stringify(name)}`);
        return false;
      default: return assertNever(found, 'export lookup');
    }
  }

  private infoOrGo(go: boolean, data: Uint8Array): void {
    const parsed = parseInfoRequest(data);
    if (!parsed.ok) return this.replyError(Rep.ErrInvalid, parsed.reason);
    const info = this.lookupOrReply(parsed.value.name);
    if (!info) return;
    const flags = this.flagsFor(info);
    // EXPORT first: QEMU rejects a BLOCK_SIZE seen before the size it must divide.
    this.reply(Rep.Info, infoExportPayload(info.sizeBytes, flags));
    this.reply(Rep.Info, infoBlockSizePayload(MIN_BLOCK_BYTES, PREFERRED_BLOCK_BYTES, MAX_PAYLOAD_BYTES));
    if (parsed.value.requested.has(Info.Name)) this.reply(Rep.Info, infoStringPayload(Info.Name, info.name));
    if (parsed.value.requested.has(Info.Description) && info.description) {
      this.reply(Rep.Info, infoStringPayload(Info.Description, info.description));
    }
    this.reply(Rep.Ack);
    if (go) {
      this.blockSizeNegotiated = parsed.value.requested.has(Info.BlockSize);
      this.enterTransmission(info, flags);
    }
  }

  private listMetaContext(data: Uint8Array): void {
    const parsed = parseMetaContextRequest(data);
    if (!parsed.ok) return this.replyError(Rep.ErrInvalid, parsed.reason);
    if (!this.lookupOrReply(parsed.value.exportName)) return;
    const { queries } = parsed.value;
    // No queries lists everything; "base:" is the namespace wildcard; other namespaces are ignored.
    if (queries.length === 0 || queries.includes('base:') || queries.includes(BASE_ALLOCATION)) {
      this.reply(Rep.MetaContext, metaContextPayload(0, BASE_ALLOCATION));
    }
    this.reply(Rep.Ack);
  }

  private setMetaContext(data: Uint8Array): void {
    this.allocationExport = undefined; // SET replaces the selection, even when it fails
    if (!this.structured) return this.replyError(Rep.ErrInvalid, 'SET_META_CONTEXT needs structured replies first');
    const parsed = parseMetaContextRequest(data);
    if (!parsed.ok) return this.replyError(Rep.ErrInvalid, parsed.reason);
    const info = this.lookupOrReply(parsed.value.exportName);
    if (!info) return;
    // Exactly the context asked for, once: QEMU drops the connection on anything else.
    if (parsed.value.queries.includes(BASE_ALLOCATION)) {
      this.reply(Rep.MetaContext, metaContextPayload(BASE_ALLOCATION_ID, BASE_ALLOCATION));
      this.allocationExport = info.name;
    }
    this.reply(Rep.Ack);
  }

  // ---- transmission ----

  private readRequestHeader(): boolean {
    if (this.queue.length < REQUEST_HEADER_BYTES) return false;
    const decoded = decodeRequest(this.queue.take(REQUEST_HEADER_BYTES), this.transmission!);
    switch (decoded.kind) {
      case 'command':
        this.emit({ kind: 'command', command: decoded.command });
        return true;
      case 'write': {
        const streamed = decoded.length > MAX_PAYLOAD_BYTES;
        this.startPiece(decoded.cookie, decoded.offset, decoded.fua, decoded.length, streamed ? this.nextStream++ : undefined);
        this.phase = 'write-payload';
        return true;
      }
      case 'refused-write':
        this.discard = { cookie: decoded.cookie, errno: decoded.errno, message: decoded.message, remaining: decoded.length };
        this.phase = 'write-discard';
        return true;
      case 'disconnect':
        this.phase = 'done';
        this.emit({ kind: 'disconnect' });
        return false;
      case 'fatal':
        return this.fail(decoded.reason);
      default:
        return assertNever(decoded, 'decoded request');
    }
  }

  /** The next piece of a write: all of it, or WRITE_PIECE_BYTES of a streamed one. */
  private startPiece(cookie: Cookie, offset: number, fua: boolean, remaining: number, stream: number | undefined): void {
    const length = stream === undefined ? remaining : Math.min(WRITE_PIECE_BYTES, remaining);
    // When the whole piece is here already, it is usually a view into the received chunk (a copy if
    // that chunk is only lent).
    const whole = this.queue.length >= length;
    const data = whole ? this.queue.takeKept(length) : this.allocatePayload(length);
    this.write = { cookie, offset, fua, data, filled: whole ? length : 0, remainingAfter: remaining - length, stream };
  }

  private readWritePayload(): boolean {
    const write = this.write!;
    write.filled += this.queue.moveInto(write.data, write.filled);
    if (write.filled < write.data.length) return false;
    const { cookie, offset, data, fua, stream, remainingAfter } = write;
    const piece = stream === undefined ? undefined : { stream, last: remainingAfter === 0 };
    this.emit({ kind: 'command', command: { type: 'write', cookie, offset, data, fua, ...(piece ? { piece } : {}) } });
    if (remainingAfter > 0) {
      this.startPiece(cookie, offset + data.length, fua, remainingAfter, stream);
    } else {
      this.write = undefined;
      this.phase = 'request-header';
    }
    return true;
  }

  private discardWritePayload(): boolean {
    // Dropped as it arrives: a refused write never occupies memory in full.
    const discard = this.discard!;
    discard.remaining -= this.queue.skip(discard.remaining);
    if (discard.remaining > 0) return false;
    this.discard = undefined;
    this.phase = 'request-header';
    this.emit({ kind: 'command', command: { type: 'invalid', cookie: discard.cookie, errno: discard.errno, message: discard.message } });
    return true;
  }
}

/** Whether a client with these certificate names may use the export. */
export function clientMayUse(info: ExportInfo, clientNames: readonly string[]): boolean {
  const allowed = info.allowedClients;
  return allowed === undefined || allowed.length === 0 || clientNames.some((n) => allowed.includes(n));
}

export type OptionGate = 'allow' | 'tls-required' | 'close' | 'shutdown';

/**
 * Which options a connection answers in its TLS state (the NBD spec's NOTLS / SELECTIVETLS /
 * FORCEDTLS): with `require`, only STARTTLS and ABORT before TLS; EXPORT_NAME cannot carry an
 * error, so it closes. A refusing server answers everything but ABORT with ERR_SHUTDOWN.
 */
export function optionGate(option: number, state: { tls: NbdTlsMode; tlsActive: boolean; refusing: boolean }): OptionGate {
  if (option === Opt.Abort) return 'allow';
  if (state.refusing) return option === Opt.ExportName ? 'close' : 'shutdown';
  if (state.tls !== 'require' || state.tlsActive || option === Opt.StartTls) return 'allow';
  return option === Opt.ExportName ? 'close' : 'tls-required';
}
