// Drives one socket: bytes into the core NbdConnection, commands against the volume, replies out.
// Bounded: at most MAX_IN_FLIGHT requests execute at once and reading pauses while the socket's
// send buffer is full, so neither requests nor replies pile up without limit.
import type { Socket } from 'node:net';
import { NbdConnection, type ExportDirectory, type ExportInfo, type NbdAction, type NbdCommand } from '../../core/nbd/connection.js';
import { Errno } from '../../core/nbd/constants.js';
import { nbdErrnoOf } from '../../core/nbd/errno.js';
import { statusExtents } from '../../core/nbd/block-status.js';
import {
  blockStatusReply, errorReply, fillReadReplyHeader, readReplyHeaderBytes, successReply,
} from '../../core/nbd/replies.js';
import type { ExportCatalog, NbdLogger, NbdVolume } from './types.js';

const MAX_IN_FLIGHT = 128;
/** Block status answers describe at most this much per request; clients ask again for the rest. */
const MAX_STATUS_SPAN_BYTES = 1024 * 1024 * 1024;

export class NbdSession {
  private readonly machine: NbdConnection;
  private volume: NbdVolume | undefined;
  private release: (() => void) | undefined;
  private structured = false;
  private inFlight = 0;
  private disconnecting = false;
  private shuttingDown = false;
  private closed = false;
  private readPaused = false;
  private waitingForDrain = false;
  private corked = false;
  private readonly idleWaiters: Array<() => void> = [];

  constructor(
    private readonly socket: Socket,
    private readonly catalog: ExportCatalog,
    private readonly logger: NbdLogger,
    readonly id: number,
  ) {
    this.machine = new NbdConnection(directoryOf(catalog));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (error) => this.logger.debug({ connection: id, err: error.message }, 'nbd connection error'));
    socket.on('drain', () => {
      this.waitingForDrain = false;
      this.updateReading();
    });
    socket.on('close', () => this.onClose());
    this.perform(this.machine.start());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private onData(chunk: Buffer): void {
    if (this.disconnecting || this.closed) return;
    this.perform(this.machine.receive(chunk));
  }

  private onEnd(): void {
    // The client half-closed: finish what is in flight, then close our side.
    this.disconnecting = true;
    this.endWhenIdle();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.release?.();
    this.release = undefined;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private perform(actions: NbdAction[]): void {
    for (const action of actions) {
      switch (action.kind) {
        case 'send':
          this.send(action.bytes);
          break;
        case 'transmission':
          this.startTransmission(action.export, action.structured);
          break;
        case 'command':
          this.execute(action.command);
          break;
        case 'disconnect':
          this.disconnecting = true;
          this.endWhenIdle();
          break;
        case 'close':
          this.logger.debug({ connection: this.id, reason: action.reason }, 'nbd protocol violation, closing');
          this.socket.destroy();
          return;
      }
    }
  }

  private startTransmission(info: ExportInfo, structured: boolean): void {
    try {
      const { volume, release } = this.catalog.acquireExport(info.name);
      this.volume = volume;
      this.release = release;
      this.structured = structured;
      this.logger.debug({ connection: this.id, volume: info.name, structured }, 'nbd transmission started');
    } catch (error) {
      this.logger.warn({ connection: this.id, volume: info.name, err: (error as Error).message }, 'export vanished during handshake');
      this.socket.destroy();
    }
  }

  private send(bytes: Uint8Array): void {
    if (this.closed || this.socket.destroyed) return;
    // Replies completing in the same event-loop turn (all disk completions libuv delivers at once)
    // leave in one syscall: cork now, uncork in the check phase after this turn's I/O callbacks.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    if (!this.socket.write(bytes)) {
      this.waitingForDrain = true;
      this.updateReading();
    }
  }

  private updateReading(): void {
    const shouldPause = this.waitingForDrain || this.inFlight >= MAX_IN_FLIGHT;
    if (shouldPause && !this.readPaused) {
      this.readPaused = true;
      this.socket.pause();
    } else if (!shouldPause && this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
  }

  private execute(command: NbdCommand): void {
    this.inFlight++;
    this.updateReading();
    this.run(command)
      .then((reply) => this.send(reply))
      .catch((error: unknown) => {
        const errno = this.shuttingDown ? Errno.ESHUTDOWN : nbdErrnoOf(error);
        if (errno === Errno.EIO) this.logger.error({ connection: this.id, command: command.type, err: (error as Error).message }, 'nbd I/O error');
        this.send(errorReply(this.structured, command.cookie, errno, (error as Error).message ?? 'error'));
      })
      .finally(() => {
        this.inFlight--;
        this.updateReading();
        if (this.inFlight === 0) {
          for (const w of this.idleWaiters.splice(0)) w();
          if (this.disconnecting) this.endWhenIdle();
        }
      });
  }

  private async run(command: NbdCommand): Promise<Uint8Array> {
    const volume = this.volume!;
    const { structured } = this;
    if (this.shuttingDown && command.type !== 'invalid') return errorReply(structured, command.cookie, Errno.ESHUTDOWN, 'server is shutting down');
    switch (command.type) {
      case 'invalid':
        return errorReply(structured, command.cookie, command.errno, command.message);
      case 'read': {
        if (command.length === 0) {
          volume.checkAccess('read');
          return successReply(structured, command.cookie);
        }
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
        await volume.trim(command.offset, command.length, command.fua);
        return successReply(structured, command.cookie);
      case 'write-zeroes':
        if (command.fastZero && !volume.canFastZero) {
          return errorReply(structured, command.cookie, Errno.ENOTSUP, 'fast zeroing is not possible here');
        }
        await volume.writeZeroes(command.offset, command.length, command.noHole, command.fua);
        return successReply(structured, command.cookie);
      case 'cache':
        volume.checkAccess('read');
        return successReply(structured, command.cookie);
      case 'block-status': {
        const span = Math.min(command.length, MAX_STATUS_SPAN_BYTES);
        const runs = await volume.allocation(command.offset, span);
        return blockStatusReply(command.cookie, command.contextId, statusExtents(runs, command.reqOne, command.length));
      }
    }
  }

  private endWhenIdle(): void {
    if (this.inFlight === 0 && !this.closed && !this.socket.destroyed) this.socket.end();
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
    this.socket.destroy();
  }
}

function directoryOf(catalog: ExportCatalog): ExportDirectory {
  const infoOf = (volume: NbdVolume): ExportInfo => ({
    name: volume.name,
    sizeBytes: volume.geometry.sizeBytes,
    readOnly: volume.state !== 'ready',
    canFastZero: volume.canFastZero,
    description: `tidemark volume ${volume.name} (${volume.state})`,
  });
  return {
    list: () => catalog.volumeNames().flatMap((name) => {
      const v = catalog.findVolume(name);
      return v && v.state !== 'not-ready' ? [infoOf(v)] : [];
    }),
    lookup: (requested) => {
      // The default export "" is the only volume when there is exactly one.
      const names = catalog.volumeNames();
      const name = requested === '' && names.length === 1 ? names[0]! : requested;
      const volume = catalog.findVolume(name);
      if (!volume) return { kind: 'unknown' };
      if (volume.state === 'not-ready') return { kind: 'refused', message: `volume ${name} is not ready for host access` };
      return { kind: 'found', info: infoOf(volume) };
    },
  };
}
