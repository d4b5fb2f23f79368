// One error hierarchy with stable codes, shared by the NBD front end, the HTTP API, the CLI and logs.

export const ErrorCode = {
  InvalidArgument: 'TM_ERR_INVALID_ARGUMENT',
  NotFound: 'TM_ERR_NOT_FOUND',
  AlreadyExists: 'TM_ERR_ALREADY_EXISTS',
  VolumeBusy: 'TM_ERR_VOLUME_BUSY',
  VolumeWriteDisabled: 'TM_ERR_VOLUME_WRITE_DISABLED',
  VolumeNotReady: 'TM_ERR_VOLUME_NOT_READY',
  OutOfRange: 'TM_ERR_OUT_OF_RANGE',
  LimitExceeded: 'TM_ERR_LIMIT_EXCEEDED',
  InvalidState: 'TM_ERR_INVALID_STATE',
  MetadataCorrupt: 'TM_ERR_METADATA_CORRUPT',
  Io: 'TM_ERR_IO',
  NoSpace: 'TM_ERR_NO_SPACE',
  ShuttingDown: 'TM_ERR_SHUTTING_DOWN',
  Unsupported: 'TM_ERR_UNSUPPORTED',
  Protocol: 'TM_ERR_PROTOCOL',
  Unavailable: 'TM_ERR_UNAVAILABLE',
  Internal: 'TM_ERR_INTERNAL',
  PairDiverged: 'TM_ERR_PAIR_DIVERGED',
  LinkDown: 'TM_ERR_LINK_DOWN',
  PairSuspended: 'TM_ERR_PAIR_SUSPENDED',
  /** The volume already has a pair: a new one needs --name. */
  PairNameRequired: 'TM_ERR_PAIR_NAME_REQUIRED',
  /** The command would be ambiguous given the volume's other pairs (see docs/replication.md). */
  PairConflict: 'TM_ERR_PAIR_CONFLICT',
  LinkAuthFailed: 'TM_ERR_LINK_AUTH_FAILED',
  /** An API request without a valid bearer token. */
  Unauthorized: 'TM_ERR_UNAUTHORIZED',
  /** An API request the token or the Host header does not allow (a read-only token, a foreign Host). */
  Forbidden: 'TM_ERR_FORBIDDEN',
  /** A mutating API request whose Content-Type is not application/json. */
  UnsupportedMediaType: 'TM_ERR_UNSUPPORTED_MEDIA_TYPE',
  /** A routed command (--via) refused by the route itself: a loop, too many hops, a hop that is not a peer. */
  RouteRefused: 'TM_ERR_ROUTE_REFUSED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class TidemarkError extends Error {
  override name = 'TidemarkError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
  }

  toJSON(): { code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export function isTidemarkError(error: unknown, code?: ErrorCode): error is TidemarkError {
  return error instanceof TidemarkError && (code === undefined || error.code === code);
}

export const invalidArgument = (message: string, details?: Record<string, unknown>): TidemarkError =>
  new TidemarkError(ErrorCode.InvalidArgument, message, details);
export const notFound = (message: string, details?: Record<string, unknown>): TidemarkError =>
  new TidemarkError(ErrorCode.NotFound, message, details);
export const invalidState = (message: string, details?: Record<string, unknown>): TidemarkError =>
  new TidemarkError(ErrorCode.InvalidState, message, details);
