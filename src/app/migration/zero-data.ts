// Whether a copied block is all zeros: it is then written as a zeroed range (a hole in a sparse
// file), so copying a mostly empty volume does not allocate the whole target.
const ZEROS = new Uint8Array(1024 * 1024);

export function isAllZero(data: Uint8Array): boolean {
  for (let at = 0; at < data.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, data.length - at);
    if (Buffer.compare(Buffer.from(data.buffer, data.byteOffset + at, n), Buffer.from(ZEROS.buffer, 0, n)) !== 0) return false;
  }
  return true;
}
