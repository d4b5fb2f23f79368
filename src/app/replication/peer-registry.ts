// The peers an array may replicate with: name, link address and the shared secret that
// authenticates the link. Persisted in the metadata store; the secret never leaves this array.
import { ErrorCode, TidemarkError, invalidArgument, notFound } from '../../core/errors.js';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import { isValidVolumeName } from '../../core/volume/volume-record.js';
import type { MetaStore } from '../../ports/meta-store.js';
import { relayAddress } from '../../core/link/tunnel-codec.js';

export interface PeerRecord {
  readonly name: string;
  /** HOST:PORT of its link listener, or `relay:R` for a peer reached through the relay R. */
  readonly address: string;
  readonly secretBase64: string;
  readonly createdAtMs: number;
  /** The relay (one of this array's direct peers) the link to this peer runs through. */
  readonly via?: string;
}

/** Secrets shorter than this are refused: the link's authentication is only as strong as the secret. */
export const MIN_SECRET_BYTES = 16;
const peerKey = (name: string): string => `peer/${name}`;

export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw invalidArgument(`address ${JSON.stringify(address)} is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

export class PeerRegistry {
  private readonly peers = new Map<string, PeerRecord>();

  constructor(private readonly meta: MetaStore) {}

  async load(): Promise<void> {
    for (const key of await this.meta.list('peer/')) {
      const bytes = await this.meta.read(key);
      if (!bytes) continue;
      const r = decodeJson(bytes, key) as Partial<PeerRecord>;
      if (typeof r.name !== 'string' || typeof r.address !== 'string' || typeof r.secretBase64 !== 'string' || typeof r.createdAtMs !== 'number' ||
        (r.via !== undefined && typeof r.via !== 'string')) {
        throw new TidemarkError(ErrorCode.MetadataCorrupt, `${key}: not a peer record`);
      }
      this.peers.set(r.name, r as PeerRecord);
    }
  }

  list(): PeerRecord[] {
    return [...this.peers.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  find(name: string): PeerRecord | undefined {
    return this.peers.get(name);
  }

  get(name: string): PeerRecord {
    const p = this.peers.get(name);
    if (!p) throw notFound(`no peer named ${JSON.stringify(name)}`, { peer: name });
    return p;
  }

  /** `to`: the peer's link address, or the relay it is reached through. */
  async add(name: string, to: { address: string } | { via: string }, secret: Uint8Array, selfName: string, nowMs: number): Promise<PeerRecord> {
    if (!isValidVolumeName(name)) throw invalidArgument(`invalid peer name ${JSON.stringify(name)}`);
    if (name === selfName) throw invalidArgument(`a peer cannot have this array's own name (${name})`);
    if ('address' in to) parseAddress(to.address);
    else {
      const relay = this.peers.get(to.via);
      if (!relay) throw notFound(`no peer named ${JSON.stringify(to.via)} to relay through: add the relay as a peer first`, { peer: to.via });
      if (relay.via !== undefined) throw invalidArgument(`${to.via} is itself reached through ${relay.via}: a relay must be a peer reached directly`);
      if (to.via === name) throw invalidArgument(`${name} cannot be its own relay`);
    }
    if (secret.length < MIN_SECRET_BYTES) throw invalidArgument(`the secret must be at least ${MIN_SECRET_BYTES} bytes`);
    if (this.peers.has(name)) throw new TidemarkError(ErrorCode.AlreadyExists, `peer ${name} already exists`, { peer: name });
    const record: PeerRecord = 'address' in to
      ? { name, address: to.address, secretBase64: Buffer.from(secret).toString('base64'), createdAtMs: nowMs }
      : { name, address: relayAddress(to.via), secretBase64: Buffer.from(secret).toString('base64'), createdAtMs: nowMs, via: to.via };
    await this.meta.write(peerKey(name), encodeJson(record));
    this.peers.set(name, record);
    return record;
  }

  async remove(name: string): Promise<void> {
    this.get(name);
    const relayed = this.list().filter((p) => p.via === name).map((p) => p.name);
    if (relayed.length > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy, `peer ${name} relays the link to ${relayed.join(', ')}: remove ${relayed.length === 1 ? 'that peer' : 'those peers'} first`,
        { peer: name, relays: relayed });
    }
    await this.meta.delete(peerKey(name));
    this.peers.delete(name);
  }
}
