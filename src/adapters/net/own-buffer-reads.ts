// Reading an accepted socket into buffers of our choosing (Node's `onread`) instead of a fresh
// 64 KiB buffer per read. A large NBD WRITE payload is then read straight into the buffer it is
// written from: no copy, and none of the per-read allocations whose external memory drove the
// collector under sequential writes.
import { Socket, type OnReadOpts, type SocketConstructorOpts } from 'node:net';

export interface OwnBufferReader {
  /** Where the next read goes; asked once at the start and again after every read. */
  nextBuffer(): Uint8Array;
  /** `count` bytes were read into `buffer` (the one nextBuffer gave last). */
  onRead(count: number, buffer: Uint8Array): void;
}

/**
 * A socket over `accepted`'s connection whose reads go through `reader`; `accepted` must come from
 * a server made with `pauseOnConnect` (it has read nothing yet). Node takes `onread` only when a
 * socket is constructed and a server constructs its own sockets, so the connection's handle moves
 * to a new socket. The accepted one stays behind without it, as the server's count of the
 * connection (its connection limit keeps working), and is destroyed when the new one closes.
 * Where Node's sockets do not look as expected, `accepted` is returned unchanged and reading.
 */
export function withOwnBufferReads(accepted: Socket, reader: OwnBufferReader, allowHalfOpen: boolean): Socket {
  const internals = accepted as unknown as { _handle?: unknown };
  const handle = internals._handle;
  if (handle === null || typeof handle !== 'object' || accepted.destroyed) {
    accepted.resume();
    return accepted;
  }
  internals._handle = null;
  const onread: OnReadOpts = {
    buffer: () => reader.nextBuffer(),
    callback: (count, buffer) => {
      reader.onRead(count, buffer);
      return true;
    },
  };
  // `handle` is the option net.Server itself uses for accepted connections; it is not in the types.
  const options = { handle, allowHalfOpen, readable: true, writable: true, onread } as SocketConstructorOpts;
  const socket = new Socket(options);
  socket.once('close', () => accepted.destroy());
  return socket;
}
