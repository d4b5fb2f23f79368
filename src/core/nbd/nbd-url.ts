// The NBD URI form an import names its source by (the subset of the NBD URI spec tidemark speaks:
// plain TCP, an export name): nbd://HOST[:PORT]/EXPORT.
import { invalidArgument } from '../errors.js';
import { MAX_STRING_BYTES } from './constants.js';

export const DEFAULT_NBD_PORT = 10809;

export interface NbdUrl {
  readonly host: string;
  readonly port: number;
  readonly exportName: string;
}

export function parseNbdUrl(text: string): NbdUrl {
  const match = /^nbd:\/\/(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(?:\/(.*))?$/.exec(text);
  if (!match) throw invalidArgument(`source ${JSON.stringify(text)} is not an nbd://HOST[:PORT]/EXPORT URL`);
  const port = match[2] === undefined ? DEFAULT_NBD_PORT : Number(match[2]);
  if (port < 1 || port > 65535) throw invalidArgument(`source port ${port} is out of range`);
  let exportName: string;
  try {
    exportName = decodeURIComponent(match[3] ?? '');
  } catch {
    throw invalidArgument(`source export name in ${JSON.stringify(text)} is not valid percent-encoding`);
  }
  if (new TextEncoder().encode(exportName).length > MAX_STRING_BYTES) throw invalidArgument('source export name is too long');
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port, exportName };
}
