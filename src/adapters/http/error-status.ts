// The one mapping from tidemark errors to HTTP status, and the conversion of everything else
// (fastify's own errors, unexpected exceptions) into a tidemark error with a stable code.
import { ErrorCode, TidemarkError, isTidemarkError } from '../../core/errors.js';

export function httpStatusOf(code: ErrorCode): number {
  switch (code) {
    case ErrorCode.InvalidArgument:
    case ErrorCode.OutOfRange:
    case ErrorCode.Protocol:
    case ErrorCode.RouteRefused:
      return 400;
    case ErrorCode.Unauthorized:
      return 401;
    case ErrorCode.Forbidden:
      return 403;
    case ErrorCode.NotFound:
      return 404;
    case ErrorCode.UnsupportedMediaType:
      return 415;
    case ErrorCode.AlreadyExists:
    case ErrorCode.VolumeBusy:
    case ErrorCode.VolumeWriteDisabled:
    case ErrorCode.VolumeNotReady:
    case ErrorCode.InvalidState:
    case ErrorCode.PairDiverged:
    case ErrorCode.PairSuspended:
    case ErrorCode.PairNameRequired:
    case ErrorCode.PairConflict:
      return 409;
    case ErrorCode.LimitExceeded:
      return 422;
    case ErrorCode.Unsupported:
      return 501;
    case ErrorCode.ShuttingDown:
    case ErrorCode.Unavailable:
    case ErrorCode.LinkDown:
      return 503;
    case ErrorCode.LinkAuthFailed:
      return 502; // a peer array, not the caller, failed
    case ErrorCode.NoSpace:
      return 507;
    case ErrorCode.MetadataCorrupt:
    case ErrorCode.Io:
    case ErrorCode.Internal:
      return 500;
  }
}

interface FrameworkError {
  readonly statusCode?: number;
  readonly code?: string;
  readonly message?: string;
}

/** Any thrown value as a tidemark error: framework 4xx errors are the client's bad input. */
export function toTidemarkError(error: unknown): TidemarkError {
  if (isTidemarkError(error)) return error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as FrameworkError;
  const message = e.message ?? String(error);
  if (e.statusCode === 413) {
    return new TidemarkError(ErrorCode.LimitExceeded, `request body too large: ${message}`, { frameworkCode: e.code });
  }
  if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) {
    return new TidemarkError(ErrorCode.InvalidArgument, message, { frameworkCode: e.code });
  }
  return new TidemarkError(ErrorCode.Internal, `internal error: ${message}`);
}

export const errorBody = (error: TidemarkError): { error: ReturnType<TidemarkError['toJSON']> } => ({ error: error.toJSON() });
