// The native AES-256-GCM (native/tidemark_aead.c) must be exactly AES-256-GCM: the same bytes as
// node:crypto for every length, a round trip, and a refusal of anything altered. A link between two
// arrays of different builds depends on it, and so does the link's authentication.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { nativeFs } from '../../src/adapters/fs/native.js';

const bytes = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

function reference(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
  cipher.setAAD(aad);
  return new Uint8Array(Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]));
}

test('native AES-256-GCM seals exactly as node:crypto for every length, opens what it sealed, with keys and nonces changing each call', () => {
  for (const length of [0, 1, 15, 16, 17, 4096, 65_536 + 3, 1024 * 1024]) {
    for (const aadLength of [0, 13, 28]) {
      const [key, nonce, aad, plaintext] = [bytes(32), bytes(12), bytes(aadLength), bytes(length)];
      const sealed = nativeFs.aes256GcmSeal(key, nonce, aad, plaintext);
      assert.deepEqual(Buffer.from(sealed), Buffer.from(reference(key, nonce, aad, plaintext)), `length ${length}, aad ${aadLength}`);
      const opened = nativeFs.aes256GcmOpen(key, nonce, aad, sealed);
      assert.ok(opened && Buffer.from(opened).equals(Buffer.from(plaintext)), `round trip, length ${length}`);
    }
  }
});

test('native AES-256-GCM open refuses an altered ciphertext, tag, aad, nonce or key, and a sealed text shorter than a tag', () => {
  const [key, nonce, aad, plaintext] = [bytes(32), bytes(12), bytes(20), bytes(4096)];
  const sealed = nativeFs.aes256GcmSeal(key, nonce, aad, plaintext);
  const flip = (b: Uint8Array, at: number): Uint8Array => {
    const c = new Uint8Array(b); // a copy (sealed is a Buffer, whose slice() is a view)
    c[at]! ^= 0x01;
    return c;
  };
  assert.equal(nativeFs.aes256GcmOpen(key, nonce, aad, flip(sealed, 100)), undefined, 'ciphertext');
  assert.equal(nativeFs.aes256GcmOpen(key, nonce, aad, flip(sealed, sealed.length - 1)), undefined, 'tag');
  assert.equal(nativeFs.aes256GcmOpen(key, nonce, flip(aad, 0), sealed), undefined, 'aad');
  assert.equal(nativeFs.aes256GcmOpen(key, flip(nonce, 11), aad, sealed), undefined, 'nonce');
  assert.equal(nativeFs.aes256GcmOpen(flip(key, 31), nonce, aad, sealed), undefined, 'key');
  assert.equal(nativeFs.aes256GcmOpen(key, nonce, aad, sealed.subarray(0, 15)), undefined, 'shorter than a tag');
  // After a refusal the kept context still works.
  assert.ok(nativeFs.aes256GcmOpen(key, nonce, aad, sealed));
  assert.throws(() => nativeFs.aes256GcmSeal(bytes(16), nonce, aad, plaintext), RangeError, 'a 16-byte key is refused');
  assert.throws(() => nativeFs.aes256GcmSeal(key, bytes(16), aad, plaintext), RangeError, 'a 16-byte nonce is refused');
  assert.throws(() => nativeFs.aes256GcmOpen(key, nonce, aad, 'x' as unknown as Uint8Array), TypeError);
});
