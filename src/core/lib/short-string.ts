// A short string in a binary record: u16 byte length, then UTF-8 (position ids in bitmap records
// and bitmap deltas). Decoding refuses bytes that are not UTF-8 rather than replace them.

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export const encodeShortString = (value: string): Uint8Array => enc.encode(value);

/** Writes `encoded` (from encodeShortString) at `at`; returns the offset after it. */
export function putShortString(out: Uint8Array, view: DataView, at: number, encoded: Uint8Array): number {
  view.setUint16(at, encoded.length);
  out.set(encoded, at + 2);
  return at + 2 + encoded.length;
}

/** The string at `at` and the offset after it; undefined when it runs past the end or is not UTF-8. */
export function readShortString(bytes: Uint8Array, view: DataView, at: number): { value: string; end: number } | undefined {
  if (at + 2 > bytes.length) return undefined;
  const end = at + 2 + view.getUint16(at);
  if (end > bytes.length) return undefined;
  try {
    return { value: dec.decode(bytes.subarray(at + 2, end)), end };
  } catch {
    return undefined;
  }
}
