// The API's bearer tokens in the data directory: `api-token` (full access) and `api-token.read`
// (GET only, for monitoring). Created once, at the first start, readable by the array's user only,
// and never replaced: scripts and monitoring configured with a token keep working across restarts.
import { randomBytes } from 'node:crypto';
import { link, lstat, open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDirectory } from './fsync-directory.js';

export const API_TOKEN_FILE = 'api-token';
export const API_READ_TOKEN_FILE = 'api-token.read';

/** A token file is one line; anything larger is not a token file. */
export const MAX_TOKEN_FILE_BYTES = 4096;

/** 256 random bits, URL-safe, so it fits a header, an environment variable or a config file as is. */
const newToken = (): string => randomBytes(32).toString('base64url');

/**
 * Reads `path` as a token: a regular file of at most MAX_TOKEN_FILE_BYTES holding one line.
 * Throws an Error with a message fit for an operator.
 */
export async function readTokenFile(path: string): Promise<string> {
  let info;
  try {
    info = await lstat(path);
  } catch (error) {
    throw new Error(`cannot read the token file ${path}: ${(error as Error).message}`);
  }
  if (!info.isFile()) throw new Error(`the token file ${path} is not a regular file`);
  if (info.size > MAX_TOKEN_FILE_BYTES) throw new Error(`the token file ${path} is ${info.size} bytes; a token file holds one short line`);
  const token = (await readFile(path, 'utf8')).trim();
  if (token.length === 0 || /\s/.test(token)) throw new Error(`the token file ${path} must hold one token on one line`);
  return token;
}

/**
 * The token in `dataDir/name`, created if absent. Creation is atomic and never overwrites: the
 * token is written and synced to a private temporary file, then hard-linked to its name (link(2)
 * fails if the name exists), so no reader ever sees a partial token and a concurrent creator loses
 * cleanly. A token file others can read is refused: the token would no longer be a secret.
 */
export async function ensureTokenFile(dataDir: string, name: string): Promise<string> {
  const path = join(dataDir, name);
  const existing = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (existing === undefined) {
    const temporary = join(dataDir, `.${name}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    const handle = await open(temporary, 'wx', 0o600);
    try {
      await handle.chmod(0o600); // whatever the umask
      await handle.writeFile(`${newToken()}\n`);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    try {
      await link(temporary, path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    } finally {
      await unlink(temporary);
    }
    await fsyncDirectory(dataDir);
  } else if ((existing.mode & 0o077) !== 0) {
    throw new Error(`${path} is readable or writable by other users (mode ${(existing.mode & 0o777).toString(8)}): ` +
      `run chmod 600 ${path}`);
  }
  return readTokenFile(path);
}
