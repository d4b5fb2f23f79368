// Drives one socket: received bytes into the core NbdConnection, commands against the volume,
// replies out. Bounded both ways: commands are pulled from the machine only while fewer than
// MAX_IN_FLIGHT (and MAX_IN_FLIGHT_BYTES) are executing and the socket is not waiting for 'drain';
// otherwise reading pauses and unread requests stay in the kernel's buffers.
import type { Socket } from 'node:net';
import { NbdConnection, type ExportInfo, type NbdAction, type NbdCommand } from '../../core/nbd/connection.js';
import { directoryOf } from './export-directory.js';
import { isTidemarkError } from '../../core/errors.js';
import { assertNever } from '../../core/lib/assert.js';
import { Errno } from '../../core/nbd/constants.js';
import { replyErrnoOf } from '../../core/nbd/errno.js';
import { statusExtents } from '../../core/nbd/block-status.js';
import {
  blockStatusReply, errorReply, fillReadReplyHeader, readReplyHeaderBytes, successReply,
} from '../../core/nbd/replies.js';
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
/** After DISC and the last reply, a client that does not read them is cut off after this long. */
const DISCONNECT_LINGER_MS = 30_000;

export interface SessionLimits {
  /** A client must reach transmission within this time or is disconnected. */
  readonly handshakeTimeoutMs: number;
}

export class NbdSession {
  private readonly machine: NbdConnection;
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
  private readPaused = false;
  private waitingForDrain = false;
  private corked = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private readonly idleWaiters: Array<() => void> = [];

  constructor(
    private readonly socket: Socket,
    private readonly catalog: ExportCatalog,
    private readonly logger: NbdLogger,
    readonly id: number,
    limits: SessionLimits,
  ) {
    this.machine = new NbdConnection(directoryOf(catalog));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      if (this.stopped) return;
      this.machine.receive(chunk);
      this.pump();
    });
    socket.on('end', () => {
      // The client half-closed (libnbd does after DISC): finish what it sent, then close.
      this.peerEnded = true;
      this.pump();
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // ECONNRESET / EPIPE are how clients like fio leave; nothing to do but clean up.
      this.logger.debug({ connection: id, err: error.code ?? error.message }, 'nbd connection error');
    });
    socket.on('drain', () => {
      this.waitingForDrain = false;
      this.pump();
    });
    socket.on('close', () => this.onClose());
    this.handshakeTimer = setTimeout(() => {
      this.logger.info({ connection: id }, 'nbd handshake timed out, closing');
      this.close();
    }, limits.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.logger.debug({ connection: id, remote: socket.remoteAddress ?? 'unix' }, 'nbd connection opened');
    this.pump();
  }

  private get hasRoom(): boolean {
    return !this.waitingForDrain && this.inFlight < MAX_IN_FLIGHT && this.inFlightBytes < MAX_IN_FLIGHT_BYTES;
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
    const pause = !this.stopped && !this.hasRoom;
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

  private startTransmission(info: ExportInfo, structured: boolean): void {
    clearTimeout(this.handshakeTimer);
    try {
      const { volume, release } = this.catalog.acquireExport(info.name);
      this.volume = volume;
      this.release = release;
      this.structured = structured;
      this.logger.debug({ connection: this.id, volume: info.name, structured }, 'nbd transmission started');
    } catch (error) {
      this.logger.warn({ connection: this.id, volume: info.name, err: (error as Error).message }, 'nbd export unavailable at transmission start');
      this.close();
    }
  }

  private send(bytes: Uint8Array): void {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return;
    // Replies completing in one event-loop turn (all the disk completions libuv delivers at once)
    // leave in one syscall: cork now, uncork in the check phase after this turn's I/O callbacks.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    if (!this.socket.write(bytes)) this.waitingForDrain = true;
  }

  private execute(command: NbdCommand): void {
    const bytes = command.type === 'read' ? command.length : command.type === 'write' ? command.data.length : 0;
    this.inFlight++;
    this.inFlightBytes += bytes;
    this.run(command)
      .then((reply) => this.send(reply))
      .catch((error: unknown) => {
        const fastZero = command.type === 'write-zeroes' && command.fastZero;
        const errno = this.shuttingDown ? Errno.ESHUTDOWN : replyErrnoOf(error, fastZero);
        const detail = error instanceof Error ? error.message : String(error);
        if (errno === Errno.EIO) this.logger.error({ connection: this.id, command: command.type, err: detail }, 'nbd I/O error');
        // Our own errors explain themselves to the client; anything else may name server paths.
        const message = isTidemarkError(error) ? error.message : `${command.type} failed`;
        this.send(errorReply(this.structured, command.cookie, errno, message));
      })
      .finally(() => {
        this.inFlight--;
        this.inFlightBytes -= bytes;
        if (this.inFlight === 0) this.onIdle();
        this.pump();
      });
  }

  private async run(command: NbdCommand): Promise<Uint8Array> {
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
        if (command.length === 0) return successReply(structured, command.cookie);
        // Read straight into the reply frame, behind room for its header: one buffer, one write.
        const headerBytes = readReplyHeaderBytes(structured);
        const frame = Buffer.allocUnsafe(headerBytes + command.length);
        await volume.read(command.offset, command.length, frame.subarray(headerBytes));
        fillReadReplyHeader(frame, structured, command.cookie, command.offset);
        return frame;
      }
      case 'write':
        await volume.write(command.offset, command.data, command.fua);
        return successReply(structured, command.cookie);
      case 'flush':
        await volume.flush();
        return successReply(structured, command.cookie);
      case 'trim':
        await inPieces(command.offset, command.length, command.fua, (o, l, fua) => volume.trim(o, l, fua));
        return successReply(structured, command.cookie);
      case 'write-zeroes':
        if (command.fastZero && !volume.canFastZero) {
          // The backend lost hole punching since the handshake: fail fast, data unchanged.
          return errorReply(structured, command.cookie, Errno.ENOTSUP, 'fast zeroing is not possible on this volume');
        }
        await inPieces(command.offset, command.length, command.fua, (o, l, fua) => volume.writeZeroes(o, l, command.noHole, fua));
        return successReply(structured, command.cookie);
      case 'cache':
        volume.checkAccess('read'); // a hint: nothing to prefetch into, but refuse it where reads are refused
        return successReply(structured, command.cookie);
      case 'block-status': {
        const span = Math.min(command.length, MAX_STATUS_SPAN_BYTES, volume.geometry.sizeBytes - command.offset);
        const runs = await volume.allocation(command.offset, span);
        return blockStatusReply(command.cookie, command.contextId, statusExtents(runs, command.reqOne, command.length));
      }
    }
  }

  private disconnect(): void {
    this.disconnecting = true;
    this.onIdle();
  }

  private onIdle(): void {
    if (this.inFlight !== 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
    if (this.closed) this.releaseExport();
    else if (this.disconnecting && !this.socket.writableEnded) {
      // Every reply is written: end our side, and close once it has been flushed.
      this.socket.end(() => this.socket.destroy());
      setTimeout(() => this.socket.destroy(), DISCONNECT_LINGER_MS).unref();
    }
  }

  private close(): void {
    this.stopped = true;
    this.socket.destroy();
  }

  private onClose(): void {
    this.logger.debug({ connection: this.id, volume: this.volume?.name, inFlight: this.inFlight }, 'nbd connection closed');
    this.closed = true;
    this.stopped = true;
    clearTimeout(this.handshakeTimer);
    if (this.inFlight === 0) this.releaseExport();
    for (const w of this.idleWaiters.splice(0)) w();
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
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.close();
  }
}

/** Runs a range operation in pieces of at most MAX_MUTATION_SPAN_BYTES; FUA on the last piece covers them all. */
async function inPieces(offset: number, length: number, fua: boolean, apply: (offset: number, length: number, fua: boolean) => Promise<void>): Promise<void> {
  if (length <= MAX_MUTATION_SPAN_BYTES) return apply(offset, length, fua);
  for (let at = 0; at < length; at += MAX_MUTATION_SPAN_BYTES) {
    const piece = Math.min(MAX_MUTATION_SPAN_BYTES, length - at);
    await apply(offset + at, piece, fua && at + piece === length);
  }
}
