// Loads the small native addon (native/tidemark_fs.c) that exposes fallocate and SEEK_DATA/SEEK_HOLE,
// which node:fs lacks, batched positional I/O, CRC-32C and AES-256-GCM (native/tidemark_aead.c). npm builds it with node-gyp during `npm ci`.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export interface NativeFs {
  punchHole(fd: number, offset: number, length: number): Promise<number>;
  zeroRange(fd: number, offset: number, length: number): Promise<number>;
  /** Offset of the first data byte at or after `offset`, or -1 when only a hole follows. */
  seekData(fd: number, offset: number): Promise<number>;
  /** Offset of the first hole byte at or after `offset` (end of file counts as a hole), or -1. */
  seekHole(fd: number, offset: number): Promise<number>;
  /** pwrite every buffer fully at its offset, in one thread-pool job; rejects on the first error. */
  writeBatch(fd: number, buffers: Uint8Array[], offsets: number[]): Promise<number>;
  /** pread every buffer fully from its offset (zeros past end of file), in one thread-pool job. */
  readBatch(fd: number, buffers: Uint8Array[], offsets: number[]): Promise<number>;
  /** CRC-32C with the CPU's instruction (same result as src/core/lib/crc32c.ts). */
  crc32c(data: Uint8Array, initial: number): number;
  /** AES-256-GCM (native/tidemark_aead.c): ciphertext followed by the 16-byte tag. */
  aes256GcmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** The plaintext, or undefined when the tag does not verify. */
  aes256GcmOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined;
}

function findRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'binding.gyp'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the tidemark package root (binding.gyp)');
    dir = parent;
  }
}

const root = findRoot(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(import.meta.url);
export const nativeFs: NativeFs = require(join(root, 'build', 'Release', 'tidemark_fs.node')) as NativeFs;
