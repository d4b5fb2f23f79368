// The small replies (write, flush, trim, error) of one event-loop turn, gathered in one buffer so
// they leave in one socket write with no callback. Writing each 16- or 20-byte reply on its own
// made an array, a write request and a callback per reply — at tens of thousands of 4 KiB writes a
// second, more CPU than the replies' bytes.
import { successReplyBytes, writeSuccessReply } from '../../core/nbd/replies.js';

/** Gathered bytes before the batch must be taken; 128 requests in flight need ~2.5 KiB of success replies. */
const BATCH_BYTES = 16 * 1024;
/** Frames larger than this (long error messages, block status) are not worth copying: written alone. */
export const MAX_BATCHED_FRAME_BYTES = 1024;

export class ReplyBatch {
  private readonly bytes = Buffer.allocUnsafeSlow(BATCH_BYTES);
  private readonly view = new DataView(this.bytes.buffer, this.bytes.byteOffset, BATCH_BYTES);
  private fill = 0;

  get empty(): boolean {
    return this.fill === 0;
  }

  /** Whether `length` more bytes fit; when they do not, take() the batch first. */
  fits(length: number): boolean {
    return this.fill + length <= BATCH_BYTES;
  }

  /** Adds a whole frame (at most MAX_BATCHED_FRAME_BYTES, and it must fit). */
  add(frame: Uint8Array): void {
    if (frame.length > MAX_BATCHED_FRAME_BYTES || !this.fits(frame.length)) throw new RangeError(`reply of ${frame.length} bytes does not fit the batch`);
    this.bytes.set(frame, this.fill);
    this.fill += frame.length;
  }

  /** Adds a success reply without data, encoded in place (it must fit). */
  addSuccess(structured: boolean, cookie: Uint8Array): void {
    const length = successReplyBytes(structured);
    if (!this.fits(length)) throw new RangeError('success reply does not fit the batch');
    writeSuccessReply(this.view, this.fill, structured, cookie);
    this.fill += length;
  }

  /**
   * The gathered frames, in the order added, as a buffer of their own (the socket may hold it after
   * the batch is reused), and an empty batch; undefined when empty.
   */
  take(): Buffer | undefined {
    if (this.fill === 0) return undefined;
    // Small enough to come from Node's shared allocation pool: no new ArrayBuffer per turn.
    const out = Buffer.allocUnsafe(this.fill);
    this.bytes.copy(out, 0, 0, this.fill);
    this.fill = 0;
    return out;
  }
}
