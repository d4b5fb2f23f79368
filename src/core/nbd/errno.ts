// The one mapping from tidemark errors to NBD errno values.
import { ErrorCode, isTidemarkError } from '../errors.js';
import { Errno } from './constants.js';

export function nbdErrnoOf(error: unknown): Errno {
  if (!isTidemarkError(error)) {
    const code = (error as { code?: string } | null)?.code;
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return Errno.ENOSPC;
    if (code === 'EOPNOTSUPP' || code === 'ENOTSUP') return Errno.ENOTSUP;
    return Errno.EIO;
  }
  switch (error.code) {
    case ErrorCode.VolumeWriteDisabled:
      return Errno.EPERM;
    case ErrorCode.VolumeNotReady:
    case ErrorCode.ShuttingDown:
      return Errno.ESHUTDOWN;
    case ErrorCode.OutOfRange:
    case ErrorCode.InvalidArgument:
      return Errno.EINVAL;
    case ErrorCode.NoSpace:
      return Errno.ENOSPC;
    case ErrorCode.Unsupported:
      return Errno.ENOTSUP;
    default:
      return Errno.EIO;
  }
}

/**
 * The errno to reply with for a failed command: ENOTSUP is reserved for WRITE_ZEROES with
 * FAST_ZERO (it tells the client to fall back to a slow path); for anything else it becomes EIO.
 */
export function replyErrnoOf(error: unknown, fastZero: boolean): Errno {
  const errno = nbdErrnoOf(error);
  return errno === Errno.ENOTSUP && !fastZero ? Errno.EIO : errno;
}
