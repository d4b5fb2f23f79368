// NBD wire constants (see ../shared/reference/nbd-protocol.md §1). All integers are big-endian.

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const HandshakeFlag = { FixedNewstyle: 1, NoZeroes: 2 } as const;
export const ClientFlag = { FixedNewstyle: 1, NoZeroes: 2 } as const;

export const Opt = {
  ExportName: 1, Abort: 2, List: 3, StartTls: 5, Info: 6, Go: 7,
  StructuredReply: 8, ListMetaContext: 9, SetMetaContext: 10, ExtendedHeaders: 11,
} as const;

export const Rep = {
  Ack: 1, Server: 2, Info: 3, MetaContext: 4,
  ErrUnsup: 0x80000001, ErrPolicy: 0x80000002, ErrInvalid: 0x80000003, ErrPlatform: 0x80000004,
  ErrTlsReqd: 0x80000005, ErrUnknown: 0x80000006, ErrShutdown: 0x80000007, ErrBlockSizeReqd: 0x80000008,
  ErrTooBig: 0x80000009,
} as const;

export const Info = { Export: 0, Name: 1, Description: 2, BlockSize: 3 } as const;

export const TxFlag = {
  HasFlags: 0x0001, ReadOnly: 0x0002, SendFlush: 0x0004, SendFua: 0x0008, Rotational: 0x0010,
  SendTrim: 0x0020, SendWriteZeroes: 0x0040, SendDf: 0x0080, CanMultiConn: 0x0100,
  SendResize: 0x0200, SendCache: 0x0400, SendFastZero: 0x0800,
} as const;

export const Cmd = {
  Read: 0, Write: 1, Disc: 2, Flush: 3, Trim: 4, Cache: 5, WriteZeroes: 6, BlockStatus: 7,
} as const;

export const CmdFlag = { Fua: 0x01, NoHole: 0x02, Df: 0x04, ReqOne: 0x08, FastZero: 0x10 } as const;

export const ReplyFlag = { Done: 0x0001 } as const;
export const Chunk = {
  None: 0, OffsetData: 1, OffsetHole: 2, BlockStatus: 5, Error: 0x8001, ErrorOffset: 0x8002,
} as const;

export const Errno = {
  EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108,
} as const;
export type Errno = (typeof Errno)[keyof typeof Errno];

export const STATE_HOLE = 1;
export const STATE_ZERO = 2;
export const BASE_ALLOCATION = 'base:allocation';
export const BASE_ALLOCATION_ID = 1;

/** Limits we advertise and enforce. */
export const MIN_BLOCK_BYTES = 1;
export const PREFERRED_BLOCK_BYTES = 4096;
export const MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;
/** Largest option payload accepted during the handshake; real options are a few KiB at most. */
export const MAX_OPTION_BYTES = 64 * 1024;
/** Longest string (export name, description) the protocol allows. */
export const MAX_STRING_BYTES = 4096;
/** Error messages travel inside structured replies; QEMU caps non-data payloads at 1000 bytes. */
export const MAX_ERROR_MESSAGE_BYTES = 512;
