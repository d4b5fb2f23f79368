// The native CRC-32C (the CPU's instruction) must agree with the reference implementation exactly:
// link frames and metadata records checksummed by one are verified by the other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { crc32c, installCrc32c } from '../../src/core/lib/crc32c.js';
import { nativeFs } from '../../src/adapters/fs/native.js';

test('native CRC-32C equals the reference for every length and initial value; install accepts it, refuses a wrong one', () => {
  const reference: number[] = [];
  const lengths = [0, 1, 7, 8, 9, 63, 255, 256, 257, 4096, 65_539];
  const inputs = lengths.map((n) => new Uint8Array(randomBytes(n)));
  for (const [i, data] of inputs.entries()) {
    const initial = i % 2 === 0 ? 0 : 0xdead_beef;
    reference.push(crc32c(data, initial));
    assert.equal(nativeFs.crc32c(data, initial), reference[i], `length ${data.length}`);
  }
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe306_9283, 'the standard check value');
  assert.equal(installCrc32c((data, initial) => nativeFs.crc32c(data, initial) ^ 1), false);
  assert.equal(installCrc32c(nativeFs.crc32c), true);
  for (const [i, data] of inputs.entries()) assert.equal(crc32c(data, i % 2 === 0 ? 0 : 0xdead_beef), reference[i]);
});
