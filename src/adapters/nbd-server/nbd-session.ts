// Drives one socket: received bytes into the core NbdConnection, commands against the volume,
// replies out. Bounded both ways: commands are pulled from the machine only while fewer than
// MAX_IN_FLIGHT (and MAX_IN_FLIGHT_BYTES) are executing and the socket is not waiting for 'drain';
// otherwise reading pauses and unread requests stay in the kernel's buffers.
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import {
  NbdConnection, type ExportInfo, type NbdAction, type NbdCommand, type NbdTlsMode,
} from '../../core/nbd/connection.js';
import { directoryOf } from './export-directory.js';
import { isTidemarkError } from '../../core/errors.js';
import { assertNever } from '../../core/lib/assert.js';
import { Errno, MAX_PAYLOAD_BYTES } from '../../core/nbd/constants.js';
import { replyErrnoOf } from '../../core/nbd/errno.js';
import { MAX_DESCRIPTORS, statusExtents } from '../../core/nbd/block-status.js';
import {
  blockStatusReply, errorReply, fillReadPieceHeader, fillReadReplyHeader, readReplyHeaderBytes, successReplyBytes,
} from '../../core/nbd/replies.js';
import type { ReplyBudget } from './reply-budget.js';
import type { PayloadPool } from './payload-pool.js';
import { withOwnBufferReads } from '../net/own-buffer-reads.js';
import { MAX_BATCHED_FRAME_BYTES, ReplyBatch } from './reply-batch.js';
import type { ExportCatalog, NbdLogger, NbdVolume } from './types.js';

/** Requests executing at once per connection (QEMU uses 16, nbdcopy 64, fio its iodepth). */
const MAX_IN_FLIGHT = 128;
/** READ/WRITE data bytes executing at once per connection; one request may exceed it by its own size. */
const MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;
/** Block status answers describe at most this much per request; clients ask again for the rest. */
const MAX_STATUS_SPAN_BYTES = 1024 * 1024 * 1024;
/**
 * TRIM and WRITE_ZEROES run in pieces of at most this size: the kernel sends TRIMs of up to 4 GiB,
 * more than the volume's activity log admits as one write.
 */
const MAX_MUTATION_SPAN_BYTES = 64 * 1024 * 1024;
/** A READ longer than MAX_PAYLOAD_BYTES (from a client that did not negotiate block sizes) is read and sent in pieces of this size. */
const READ_PIECE_BYTES = 4 * 1024 * 1024;
/** What run() returns for a success reply without data (encoded into the batch, no frame of its own). */
const SUCCESS = 'success';
/** After DISC and the last reply, a client that does not read them is cut off after this long. */
const DISCONNECT_LINGER_MS = 30_000;

export interface SessionLimits {
  /** A client must reach transmission within this time or is disconnected. */
  readonly handshakeTimeoutMs: number;
  /** In transmission, a client that sends nothing for this long while nothing is executing is disconnected. */
  readonly idleTimeoutMs?: number | undefined;
}

export interface SessionTls {
  readonly mode: Exclude<NbdTlsMode, 'off'>;
  readonly context: SecureContext;
  /**
   * `--tls-ca`: client certificates are required and must be issued by one of these. Checked here
   * because a TLSSocket made over an existing socket (STARTTLS) runs no verification of its own.
   */
  readonly clientCas?: readonly X509Certificate[] | undefined;
}

export interface SessionContext {
  readonly catalog: ExportCatalog;
  readonly logger: NbdLogger;
  readonly limits: SessionLimits;
  readonly tls?: SessionTls | undefined;
  readonly budget: ReplyBudget;
  readonly payloads: PayloadPool;
  /** The server takes no new connections: options are answered ERR_SHUTDOWN with this message. */
  readonly refusal?: string | undefined;
  /** Called once, when the connection (plain or TLS) has closed. */
  readonly onClosed: () => void;
  /** Called whenever the connection receives bytes. */
  readonly onInput?: (() => void) | undefined;
}

/** Reply bytes held from the budget until the socket has passed them to the kernel. */
interface Reservation {
  bytes: number;
}

/** The pieces of one streamed WRITE still executing, and the first error among them. */
interface WriteStream {
  pending: number;
  lastSeen: boolean;
  error: unknown;
}

type Listener = (...args: never[]) => void;

/** Reads not into a payload go here; the connection copies out what it keeps (the buffer is reused). */
const READ_BUFFER_BYTES = 64 * 1024;
/**
 * A payload with at least this much still to come is read into directly. Less is read into the
 * read buffer with whatever follows it: one read then also brings the next requests.
 */
const DIRECT_READ_MIN_BYTES = 32 * 1024;

export class NbdSession {
  private readonly machine: NbdConnection;
  private socket: Socket;
  /** The plain socket under a TLS one (kept to tear both down). */
  private rawSocket: Socket | undefined;
  private listeners: Array<[string, Listener]> = [];
  private volume: NbdVolume | undefined;
  private release: (() => void) | undefined;
  private structured = false;
  private inFlight = 0;
  private inFlightBytes = 0;
  /** No more actions are taken from the machine (it ended, or the socket is going away). */
  private stopped = false;
  private disconnecting = false;
  /** The client will send nothing more. */
  private peerEnded = false;
  private shuttingDown = false;
  private closed = false;
  private closedReported = false;
  private readPaused = false;
  private waitingForDrain = false;
  private corked = false;
  /** The STARTTLS reply is on its way out; the TLS handshake follows. */
  private upgrading = false;
  /** A simple-reply READ is streaming: nothing else may be written until it is done. */
  private exclusive = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastReceivedMs = Date.now();
  private readonly idleWaiters: Array<() => void> = [];
  private readonly drainWaiters: Array<() => void> = [];
  private readonly reservations = new Set<Reservation>();
  private readonly streams = new Map<number, WriteStream>();
  /** This turn's small replies, written together when the turn ends (see startTurn). */
  private readonly replies = new ReplyBatch();
  /** Its own memory (allocUnsafeSlow): a read into it, or into a view of it, is told by `.buffer`. */
  private readonly readBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  /** The last WRITE was large enough to be read in place: the next request is likely another. */
  private largeWrites = false;
  private readonly stopWaitingForBudget: () => void;
  private readonly catalog: ExportCatalog;
  private readonly logger: NbdLogger;

  /** `accepted`: from a server made with pauseOnConnect. */
  constructor(accepted: Socket, private readonly ctx: SessionContext, readonly id: number) {
    this.catalog = ctx.catalog;
    this.logger = ctx.logger;
    this.machine = new NbdConnection(directoryOf(ctx.catalog), {
      // Pooled payloads hold an earlier write's bytes until the connection has overwritten all of them.
      tls: ctx.tls?.mode ?? 'off', refusal: ctx.refusal, allocatePayload: (length) => ctx.payloads.acquire(length),
    });
    const socket = withOwnBufferReads(accepted, {
      nextBuffer: () => this.nextReadBuffer(),
      onRead: (count, buffer) => this.onRead(count, buffer),
    }, true);
    this.socket = socket;
    socket.setNoDelay(true);
    this.attach(socket);
    this.stopWaitingForBudget = ctx.budget.onRoom(() => this.pump());
    this.handshakeTimer = setTimeout(() => {
      this.logger.info({ connection: id }, 'nbd handshake timed out, closing');
      this.close();
    }, ctx.limits.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.logger.debug({ connection: id, remote: socket.remoteAddress ?? 'unix' }, 'nbd connection opened');
    this.pump();
  }

  /** Listens to `socket` (the plain one, then the TLS one after STARTTLS). */
  private attach(socket: Socket): void {
    const on = (event: string, listener: Listener): void => {
      socket.on(event, listener as (...args: unknown[]) => void);
      this.listeners.push([event, listener]);
    };
    // Only a TLS socket emits 'data'; the plain one reads through nextReadBuffer / onRead.
    on('data', (chunk: Buffer) => {
      if (this.stopped) return;
      this.ctx.onInput?.();
      this.lastReceivedMs = Date.now();
      this.machine.receive(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
      this.pump();
    });
    on('end', () => {
      // The client half-closed (libnbd does after DISC): finish what it sent, then close.
      this.peerEnded = true;
      this.pump();
    });
    on('error', (error: NodeJS.ErrnoException) => {
      // ECONNRESET / EPIPE are how clients like fio leave; nothing to do but clean up.
      this.logger.debug({ connection: this.id, err: error.code ?? error.message }, 'nbd connection error');
    });
    on('drain', () => {
      this.waitingForDrain = false;
      for (const wake of this.drainWaiters.splice(0)) wake();
      this.pump();
    });
    on('close', () => this.onClose());
  }

  private nextReadBuffer(): Uint8Array {
    const space = this.machine.payloadSpace();
    if (space !== undefined && space.length >= DIRECT_READ_MIN_BYTES) return space;
    // After a large WRITE, read only the next header: if another large WRITE follows, all of its
    // payload is then read in place (a full read buffer would have taken its first 64 KiB to copy).
    const header = this.largeWrites ? this.machine.requestHeaderMissing() : undefined;
    return header === undefined ? this.readBuffer : this.readBuffer.subarray(0, header);
  }

  private onRead(count: number, buffer: Uint8Array): void {
    if (this.stopped) return;
    this.ctx.onInput?.();
    this.lastReceivedMs = Date.now();
    if (buffer.buffer === this.readBuffer.buffer) {
      // A plain Uint8Array view, not the Buffer's subarray: every view and copy the machine makes of
      // it (a request header, a cookie, a payload) then skips Buffer's species lookup.
      this.machine.receiveLent(new Uint8Array(buffer.buffer, buffer.byteOffset, count));
      try {
        this.pump();
      } finally {
        this.machine.endLoan();
      }
    } else {
      this.machine.payloadFilled(count);
      this.pump();
    }
  }

  private detach(socket: Socket): void {
    for (const [event, listener] of this.listeners) socket.off(event, listener as (...args: unknown[]) => void);
    this.listeners = [];
  }

  private get hasRoom(): boolean {
    // The budget holds back requests, never the handshake (a refused client must still hear why).
    const budgetFull = this.volume !== undefined && this.ctx.budget.full;
    return !this.waitingForDrain && !this.upgrading && !this.exclusive && !budgetFull &&
      this.inFlight < MAX_IN_FLIGHT && this.inFlightBytes < MAX_IN_FLIGHT_BYTES;
  }

  /** Takes actions from the machine while there is room, then pauses or resumes reading to match. */
  private pump(): void {
    while (!this.stopped && this.hasRoom) {
      const action = this.machine.poll();
      if (!action) {
        if (this.peerEnded) {
          // Whatever is left is an incomplete frame that can never complete.
          this.stopped = true;
          this.disconnect();
        }
        break;
      }
      this.perform(action);
    }
    // While upgrading, the plain socket stays paused: the TLS socket takes over its reading.
    const pause = this.upgrading || (!this.stopped && !this.hasRoom);
    if (pause !== this.readPaused && !this.socket.destroyed) {
      this.readPaused = pause;
      if (pause) this.socket.pause();
      else this.socket.resume();
    }
  }

  private perform(action: NbdAction): void {
    switch (action.kind) {
      case 'send':
        this.send(action.bytes);
        return;
      case 'transmission':
        this.startTransmission(action.export, action.structured);
        return;
      case 'command':
        this.execute(action.command);
        return;
      case 'starttls':
        this.startTls();
        return;
      case 'access-denied':
        this.logger.warn({ connection: this.id, volume: action.export, client: action.clientNames },
          'nbd client refused: not on the volume\'s allow-list');
        return;
      case 'disconnect':
        this.stopped = true;
        this.disconnect();
        return;
      case 'close':
        this.logger.debug({ connection: this.id, reason: action.reason }, 'nbd protocol violation, closing');
        this.close();
        return;
      default:
        assertNever(action, 'nbd action');
    }
  }

  /** Once the STARTTLS ACK has reached the kernel, the TLS handshake runs over the same socket. */
  private startTls(): void {
    const tls = this.ctx.tls!;
    this.upgrading = true;
    const plain = this.socket;
    // The write callback runs after the ACK has been handed to the kernel, and before the client
    // can have answered it: the first TLS bytes are read by the TLS socket.
    plain.write(new Uint8Array(0), () => {
      if (this.closed || plain.destroyed) return;
      this.detach(plain);
      const verifyClients = tls.clientCas !== undefined;
      const secure = new TLSSocket(plain, {
        isServer: true, secureContext: tls.context, requestCert: verifyClients, rejectUnauthorized: verifyClients,
      });
      this.rawSocket = plain;
      this.socket = secure;
      this.readPaused = false;
      plain.once('close', () => secure.destroy());
      this.attach(secure);
      secure.once('secure', () => {
        const refused = tls.clientCas ? clientCertificateProblem(secure, tls.clientCas, new Date()) : undefined;
        if (refused !== undefined) {
          this.logger.warn({ connection: this.id, remote: plain.remoteAddress ?? 'unix', reason: refused }, 'nbd client certificate refused');
          this.close();
          return;
        }
        const names = certificateNames(secure);
        this.upgrading = false;
        this.logger.debug({ connection: this.id, client: names, protocol: secure.getProtocol() }, 'nbd TLS established');
        this.machine.tlsEstablished(names);
        this.pump();
      });
      secure.once('error', (error: Error) => {
        if (this.upgrading) this.logger.info({ connection: this.id, err: error.message }, 'nbd TLS handshake failed');
      });
    });
  }

  private startTransmission(info: ExportInfo, structured: boolean): void {
    clearTimeout(this.handshakeTimer);
    try {
      const { volume, release } = this.catalog.acquireExport(info.name);
      this.volume = volume;
      this.release = release;
      this.structured = structured;
      this.armIdleTimer();
      this.logger.debug({ connection: this.id, volume: info.name, structured, tls: this.machine.tls }, 'nbd transmission started');
    } catch (error) {
      this.logger.warn({ connection: this.id, volume: info.name, err: (error as Error).message }, 'nbd export unavailable at transmission start');
      this.close();
    }
  }

  private armIdleTimer(): void {
    const idleMs = this.ctx.limits.idleTimeoutMs;
    if (idleMs === undefined || this.closed) return;
    const dueInMs = this.lastReceivedMs + idleMs - Date.now();
    this.idleTimer = setTimeout(() => {
      if (this.closed) return;
      if (this.inFlight === 0 && Date.now() - this.lastReceivedMs >= idleMs) {
        this.logger.info({ connection: this.id, volume: this.volume?.name, idleTimeoutMs: idleMs }, 'nbd connection idle, closing');
        this.close();
        return;
      }
      this.armIdleTimer();
    }, Math.max(dueInMs, idleMs / 10));
    this.idleTimer.unref();
  }

  private get writable(): boolean {
    return !this.closed && !this.socket.destroyed && !this.socket.writableEnded;
  }

  /**
   * Writes one whole frame; `reservation` goes back to the budget once the socket has passed it on.
   * Frames go out in the order sent: small ones in transmission join this turn's batch, and a
   * frame written alone first writes the batch ahead of it.
   */
  private send(bytes: Uint8Array, reservation?: Reservation): void {
    if (!this.writable) {
      if (reservation) this.giveBack(reservation);
      return;
    }
    this.startTurn();
    if (reservation === undefined && this.volume !== undefined && bytes.length <= MAX_BATCHED_FRAME_BYTES) {
      if (!this.replies.fits(bytes.length)) this.writeBatch();
      this.replies.add(bytes);
      return;
    }
    this.writeBatch();
    const done = reservation ? (): void => this.giveBack(reservation) : undefined;
    if (!this.socket.write(bytes, done)) this.waitingForDrain = true;
  }

  /** A success reply without data, encoded straight into the batch. */
  private sendSuccess(cookie: Uint8Array): void {
    if (!this.writable) return;
    this.startTurn();
    if (!this.replies.fits(successReplyBytes(this.structured))) this.writeBatch();
    this.replies.addSuccess(this.structured, cookie);
  }

  /**
   * Replies completing in one event-loop turn (all the disk completions libuv delivers at once)
   * leave in one syscall: cork now; in the check phase after this turn's I/O callbacks, write the
   * batch and uncork.
   */
  private startTurn(): void {
    if (this.corked) return;
    this.corked = true;
    const socket = this.socket;
    socket.cork();
    setImmediate(() => {
      this.corked = false;
      if (socket === this.socket) this.writeBatch();
      socket.uncork();
    });
  }

  /** Hands the replies sent so far to the socket now rather than at the end of the turn. */
  private flushNow(): void {
    this.writeBatch();
    if (this.corked) {
      this.corked = false;
      this.socket.uncork();
    }
  }

  private writeBatch(): void {
    const batch = this.replies.take();
    if (batch === undefined || !this.writable) return;
    if (!this.socket.write(batch)) this.waitingForDrain = true;
  }

  private reserve(bytes: number): Reservation {
    const reservation = { bytes };
    this.reservations.add(reservation);
    this.ctx.budget.take(bytes);
    return reservation;
  }

  private giveBack(reservation: Reservation): void {
    if (!this.reservations.delete(reservation)) return;
    this.ctx.budget.give(reservation.bytes);
  }

  private execute(command: NbdCommand): void {
    const bytes = command.type === 'read' ? Math.min(command.length, MAX_PAYLOAD_BYTES) : command.type === 'write' ? command.data.length : 0;
    // A READ's reply buffer counts against the budget from the moment it is allocated; a
    // streamed READ reserves piece by piece.
    const reservation = command.type === 'read' && command.length <= MAX_PAYLOAD_BYTES && command.length > 0
      ? this.reserve(readReplyHeaderBytes(this.structured) + command.length) : undefined;
    if (command.type === 'write') this.largeWrites = command.data.length >= DIRECT_READ_MIN_BYTES;
    const piece = command.type === 'write' ? command.piece : undefined;
    if (piece) {
      const stream = this.streams.get(piece.stream) ?? { pending: 0, lastSeen: false, error: undefined };
      this.streams.set(piece.stream, stream);
      stream.pending++;
      stream.lastSeen = piece.last;
    }
    if (command.type === 'read' && command.length > MAX_PAYLOAD_BYTES && !this.structured) this.exclusive = true;
    this.inFlight++;
    this.inFlightBytes += bytes;
    this.run(command, reservation)
      .then((reply) => {
        try {
          if (piece) this.pieceDone(command, piece.stream, undefined);
          else if (reply === SUCCESS) this.sendSuccess(command.cookie);
          else if (reply) this.send(reply, reservation);
        } finally {
          this.finished(bytes);
        }
      }, (error: unknown) => {
        try {
          if (reservation) this.giveBack(reservation);
          if (piece) this.pieceDone(command, piece.stream, error);
          else this.sendError(command, error);
        } finally {
          this.finished(bytes);
        }
      });
  }

  private finished(bytes: number): void {
    this.inFlight--;
    this.inFlightBytes -= bytes;
    // At 1, a streamed simple READ may be waiting for the others to finish (othersDone).
    if (this.inFlight <= 1) this.onIdle();
    this.pump();
  }

  /** One piece of a streamed WRITE finished: the reply goes out after the last. */
  private pieceDone(command: NbdCommand, id: number, error: unknown): void {
    const stream = this.streams.get(id)!;
    stream.pending--;
    stream.error ??= error;
    if (!stream.lastSeen || stream.pending > 0) return;
    this.streams.delete(id);
    if (stream.error !== undefined) this.sendError(command, stream.error);
    else this.sendSuccess(command.cookie);
  }

  private sendError(command: NbdCommand, error: unknown): void {
    const fastZero = command.type === 'write-zeroes' && command.fastZero;
    const errno = this.shuttingDown ? Errno.ESHUTDOWN : replyErrnoOf(error, fastZero);
    const detail = error instanceof Error ? error.message : String(error);
    if (errno === Errno.EIO) this.logger.error({ connection: this.id, command: command.type, err: detail }, 'nbd I/O error');
    // Our own errors explain themselves to the client; anything else may name server paths.
    const message = isTidemarkError(error) ? error.message : `${command.type} failed`;
    this.send(errorReply(this.structured, command.cookie, errno, message));
  }

  /** The reply to send (SUCCESS: one without data), or undefined when the command sent its own (a streamed READ). */
  private async run(command: NbdCommand, reservation: Reservation | undefined): Promise<Uint8Array | typeof SUCCESS | undefined> {
    const volume = this.volume!;
    const { structured } = this;
    if (this.shuttingDown && command.type !== 'invalid') {
      return errorReply(structured, command.cookie, Errno.ESHUTDOWN, 'server is shutting down');
    }
    switch (command.type) {
      case 'invalid':
        return errorReply(structured, command.cookie, command.errno, command.message);
      case 'read': {
        volume.checkAccess('read');
        if (command.length === 0) return SUCCESS;
        if (command.length > MAX_PAYLOAD_BYTES) return this.streamRead(volume, command);
        void reservation; // given back when the frame has been written
        // Read straight into the reply frame, behind room for its header: one buffer, one write.
        const headerBytes = readReplyHeaderBytes(structured);
        const frame = Buffer.allocUnsafe(headerBytes + command.length);
        await volume.read(command.offset, command.length, frame.subarray(headerBytes));
        fillReadReplyHeader(frame, structured, command.cookie, command.offset);
        return frame;
      }
      case 'write':
        await volume.write(command.offset, command.data, command.fua);
        // Only after success: a failed write's bytes may still be on their way somewhere.
        this.ctx.payloads.release(command.data);
        return SUCCESS;
      case 'flush':
        await volume.flush();
        return SUCCESS;
      case 'trim':
        await inPieces(command.offset, command.length, command.fua, (o, l, fua) => volume.trim(o, l, fua));
        return SUCCESS;
      case 'write-zeroes':
        if (command.fastZero && !volume.canFastZero) {
          // The backend lost hole punching since the handshake: fail fast, data unchanged.
          return errorReply(structured, command.cookie, Errno.ENOTSUP, 'fast zeroing is not possible on this volume');
        }
        await inPieces(command.offset, command.length, command.fua, (o, l, fua) => volume.writeZeroes(o, l, command.noHole, fua));
        return SUCCESS;
      case 'cache':
        volume.checkAccess('read'); // a hint: nothing to prefetch into, but refuse it where reads are refused
        return SUCCESS;
      case 'block-status': {
        const span = Math.min(command.length, MAX_STATUS_SPAN_BYTES, volume.geometry.sizeBytes - command.offset);
        // Work per request is bounded too: the scan stops at the extents one reply can carry.
        const runs = await volume.allocation(command.offset, span, command.reqOne ? 1 : MAX_DESCRIPTORS);
        return blockStatusReply(command.cookie, command.contextId, statusExtents(runs, command.reqOne, command.length));
      }
    }
  }

  /**
   * A READ longer than MAX_PAYLOAD_BYTES, read and sent READ_PIECE_BYTES at a time, each piece
   * waiting for the socket to drain and the budget to have room: bounded memory for any length.
   * Structured: one OFFSET_DATA chunk per piece (DONE on the last). Simple: the header, then the
   * data; nothing else is written meanwhile (exclusive), and a failure after the header closes.
   */
  private async streamRead(volume: NbdVolume, command: Extract<NbdCommand, { type: 'read' }>): Promise<undefined> {
    const { structured } = this;
    try {
      if (!structured) await this.othersDone();
      for (let at = 0; at < command.length; at += READ_PIECE_BYTES) {
        const length = Math.min(READ_PIECE_BYTES, command.length - at);
        await this.roomToSend();
        if (this.closed) return undefined;
        const last = at + length === command.length;
        const headerBytes = structured ? readReplyHeaderBytes(true) : at === 0 ? readReplyHeaderBytes(false) : 0;
        const reservation = this.reserve(headerBytes + length);
        const frame = Buffer.allocUnsafe(headerBytes + length);
        try {
          await volume.read(command.offset + at, length, frame.subarray(headerBytes));
        } catch (error) {
          this.giveBack(reservation);
          if (at === 0) throw error; // nothing sent yet: an ordinary error reply
          if (!structured) {
            // The success header is out: the only way to signal the failure is to hang up.
            this.logger.error({ connection: this.id, err: (error as Error).message }, 'nbd read failed midway, closing');
            this.close();
            return undefined;
          }
          this.sendError(command, error);
          return undefined;
        }
        if (structured) fillReadPieceHeader(frame, command.cookie, command.offset + at, last);
        else if (at === 0) fillReadReplyHeader(frame.subarray(0, headerBytes), false, command.cookie, command.offset);
        this.send(frame, reservation);
      }
      return undefined;
    } finally {
      if (this.exclusive) {
        this.exclusive = false;
        queueMicrotask(() => this.pump());
      }
    }
  }

  /** Resolves when nothing but the caller is executing (a simple streamed READ owns the socket). */
  private async othersDone(): Promise<void> {
    while (this.inFlight > 1 && !this.closed) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private async roomToSend(): Promise<void> {
    while (!this.closed && (this.waitingForDrain || this.ctx.budget.full)) {
      await new Promise<void>((resolve) => {
        if (this.waitingForDrain) this.drainWaiters.push(resolve);
        else {
          const stop = this.ctx.budget.onRoom(() => { stop(); resolve(); });
        }
        this.idleWaiters.push(resolve); // woken on close as well
      });
    }
  }

  private disconnect(): void {
    this.disconnecting = true;
    this.onIdle();
  }

  private onIdle(): void {
    for (const w of this.idleWaiters.splice(0)) w();
    if (this.inFlight !== 0) return;
    if (this.closed) this.releaseExport();
    else if (this.disconnecting && !this.socket.writableEnded) {
      // Every reply is written: end our side, and close once it has been flushed.
      this.flushNow();
      const socket = this.socket;
      socket.end(() => socket.destroy());
      setTimeout(() => socket.destroy(), DISCONNECT_LINGER_MS).unref();
    }
  }

  private close(): void {
    this.stopped = true;
    this.socket.destroy();
    this.rawSocket?.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.logger.debug({ connection: this.id, volume: this.volume?.name, inFlight: this.inFlight }, 'nbd connection closed');
    this.closed = true;
    this.stopped = true;
    this.rawSocket?.destroy();
    clearTimeout(this.handshakeTimer);
    clearTimeout(this.idleTimer);
    this.stopWaitingForBudget();
    // Whatever the socket had not passed on is gone with it.
    for (const reservation of [...this.reservations]) this.giveBack(reservation);
    if (this.inFlight === 0) this.releaseExport();
    for (const w of this.idleWaiters.splice(0)) w();
    for (const w of this.drainWaiters.splice(0)) w();
    if (!this.closedReported) {
      this.closedReported = true;
      this.ctx.onClosed();
    }
  }

  /** The export is in use until the socket has closed and no request on it is still running. */
  private releaseExport(): void {
    this.release?.();
    this.release = undefined;
  }

  /** Server shutdown: new requests get ESHUTDOWN; in-flight ones finish (bounded by `waitMs`); then close. */
  async shutdown(waitMs: number): Promise<void> {
    this.shuttingDown = true;
    if (this.inFlight > 0 && !this.closed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        const wait = (): void => {
          if (this.inFlight > 0 && !this.closed) {
            this.idleWaiters.push(wait);
            return;
          }
          clearTimeout(timer);
          resolve();
        };
        this.idleWaiters.push(wait);
      });
    }
    // The last requests' replies may still be gathered for the end of this turn.
    if (!this.closed) this.flushNow();
    this.close();
  }
}

/**
 * Why the client's certificate is not acceptable, or undefined when it is: there must be one, it
 * must be within its validity period and signed by one of `cas` (directly). The TLS handshake has
 * already proved the client holds its private key.
 */
export function clientCertificateProblem(socket: TLSSocket, cas: readonly X509Certificate[], now: Date): string | undefined {
  const peer = socket.getPeerX509Certificate();
  if (!peer) return 'no client certificate';
  if (now < new Date(peer.validFrom) || now > new Date(peer.validTo)) return `certificate of ${peer.subject.replace(/\n/g, ', ')} is not valid now`;
  const issuer = cas.find((ca) => ca.ca && peer.checkIssued(ca) && peer.verify(ca.publicKey));
  if (!issuer) return `certificate of ${peer.subject.replace(/\n/g, ', ')} is not signed by a CA in --tls-ca`;
  return undefined;
}

/** The names a verified client certificate carries: its CN and its DNS, email and URI subjectAltNames. */
export function certificateNames(socket: TLSSocket): string[] {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return [];
  const names = new Set<string>();
  const cn = cert.subject?.CN as string | string[] | undefined;
  for (const n of Array.isArray(cn) ? cn : cn ? [cn] : []) names.add(n);
  for (const entry of (cert.subjectaltname ?? '').split(', ')) {
    const match = /^(?:DNS|email|URI|IP Address):(.+)$/.exec(entry);
    if (match) names.add(match[1]!);
  }
  return [...names];
}

/** Runs a range operation in pieces of at most MAX_MUTATION_SPAN_BYTES; FUA on the last piece covers them all. */
async function inPieces(offset: number, length: number, fua: boolean, apply: (offset: number, length: number, fua: boolean) => Promise<void>): Promise<void> {
  if (length <= MAX_MUTATION_SPAN_BYTES) return apply(offset, length, fua);
  for (let at = 0; at < length; at += MAX_MUTATION_SPAN_BYTES) {
    const piece = Math.min(MAX_MUTATION_SPAN_BYTES, length - at);
    await apply(offset + at, piece, fua && at + piece === length);
  }
}
