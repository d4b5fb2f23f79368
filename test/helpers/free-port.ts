// A TCP port on 127.0.0.1 the kernel just had free, for a server that cannot listen on port 0 and
// say which it got (nbdkit, qemu-nbd, a daemon's --link). One rule for the tests and the benches.
import { createServer } from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
