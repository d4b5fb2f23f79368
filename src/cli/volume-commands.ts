// tidemark volume …: create, list, show, delete, set-state, set-access, changes.
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { formatSize, parseSize } from './sizes.js';
import { printFields, printJson, printTable, type GlobalOptions } from './output.js';
import { VOLUME_STATES } from '../core/volume/state.js';
import { invalidArgument } from '../core/errors.js';

interface VolumeJson {
  name: string; uuid: string; sizeBytes: number; trackBytes: number; recordBytes: number; trackCount: number;
  state: string; createdAt: string; exports: number; changedTracks: number; hotExtents: number;
  lastRecovery: { crashed: boolean; tracksMarked: number }; allowedClients: string[];
}
interface ChangesJson {
  volume: string; trackBytes: number; trackCount: number; changedTracks: number;
  runs: Array<{ start: number; end: number }>; nextTrack: number | null;
}

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

function showVolume(v: VolumeJson): void {
  printFields([
    ['name', v.name], ['uuid', v.uuid], ['size', `${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)`],
    ['tracks', `${v.trackCount} × ${formatSize(v.trackBytes)} (records of ${formatSize(v.recordBytes)})`],
    ['state', v.state], ['created', v.createdAt], ['nbd connections', v.exports],
    ['changed tracks', `${v.changedTracks} since last reset`], ['hot extents', v.hotExtents],
    ['nbd clients', v.allowedClients.length === 0 ? 'any' : v.allowedClients.join(', ')],
    ['last start', v.lastRecovery.crashed ? `after a crash: ${v.lastRecovery.tracksMarked} tracks marked changed` : 'clean'],
  ]);
}

export function registerVolumeCommands(program: Command, run: (action: Run) => Promise<void>): void {
  const volume = program.command('volume').description('create, inspect and delete volumes');

  volume.command('create <name>')
    .description('create a volume (a sparse file that reads as zeros)')
    .requiredOption('--size <size>', 'volume size: bytes or a binary unit (64KiB, 512MiB, 1GiB, 2TiB)')
    .option('--track-size <size>', 'track size, the unit of change tracking and copying (power of two)', '64KiB')
    .action((name: string, opts: { size: string; trackSize: string }) => run(async (client, globals) => {
      const body = { name, sizeBytes: parseSize(opts.size), trackBytes: parseSize(opts.trackSize) };
      const v = await client.request<VolumeJson>('POST', '/v1/volumes', body);
      if (globals.json) printJson(v);
      else process.stdout.write(`created volume ${v.name}: ${formatSize(v.sizeBytes)}, ${v.trackCount} tracks of ${formatSize(v.trackBytes)}\n`);
    }));

  volume.command('list')
    .description('list volumes')
    .action(() => run(async (client, globals) => {
      const { volumes } = await client.request<{ volumes: VolumeJson[] }>('GET', '/v1/volumes');
      if (globals.json) return printJson({ volumes });
      printTable(['NAME', 'SIZE', 'TRACK', 'STATE', 'CONNS', 'CHANGED'],
        volumes.map((v) => [v.name, formatSize(v.sizeBytes), formatSize(v.trackBytes), v.state, String(v.exports), String(v.changedTracks)]));
    }));

  volume.command('show <name>')
    .description('show one volume')
    .action((name: string) => run(async (client, globals) => {
      const v = await client.request<VolumeJson>('GET', `/v1/volumes/${encodeURIComponent(name)}`);
      if (globals.json) printJson(v);
      else showVolume(v);
    }));

  volume.command('delete <name>')
    .description('delete a volume and its data (refused while NBD clients are connected)')
    .action((name: string) => run(async (client, globals) => {
      const result = await client.request<unknown>('DELETE', `/v1/volumes/${encodeURIComponent(name)}`);
      if (globals.json) printJson(result);
      else process.stdout.write(`deleted volume ${name}\n`);
    }));

  volume.command('set-state <name> <state>')
    .description(`set host access: ${VOLUME_STATES.join(' | ')} (write-disabled: reads only; not-ready: no access)`)
    .action((name: string, state: string) => run(async (client, globals) => {
      if (!(VOLUME_STATES as readonly string[]).includes(state)) {
        throw invalidArgument(`invalid state ${JSON.stringify(state)}: one of ${VOLUME_STATES.join(', ')}`);
      }
      const v = await client.request<VolumeJson>('PUT', `/v1/volumes/${encodeURIComponent(name)}/state`, { state });
      if (globals.json) printJson(v);
      else process.stdout.write(`volume ${v.name} is now ${v.state}\n`);
    }));

  volume.command('set-access <name>')
    .description('limit NBD access to clients whose TLS certificate carries one of the names (CN or subjectAltName); ' +
      'needs "array start --nbd-tls … --tls-ca FILE"')
    .option('--allow <names...>', 'client certificate names allowed to use the volume (replaces the list)')
    .option('--clear', 'remove the list: any client may use the volume')
    .addHelpText('after', `
A client not on the list is refused the volume (NBD_REP_ERR_POLICY; the array logs it) and does not see
it in export lists. Connections already using the volume keep it. The list is stored with the volume.
  tidemark volume set-access db1 --allow host-a.example.com host-b.example.com
  tidemark volume set-access db1 --clear`)
    .action((name: string, opts: { allow?: string[]; clear?: boolean }) => run(async (client, globals) => {
      if ((opts.allow === undefined) === (opts.clear === undefined)) throw invalidArgument('give either --allow NAME… or --clear');
      const allowedClients = opts.clear ? [] : opts.allow!;
      const v = await client.request<VolumeJson>('PUT', `/v1/volumes/${encodeURIComponent(name)}/access`, { allowedClients });
      if (globals.json) printJson(v);
      else if (v.allowedClients.length === 0) process.stdout.write(`volume ${v.name}: any NBD client may use it\n`);
      else process.stdout.write(`volume ${v.name}: NBD clients allowed: ${v.allowedClients.join(', ')}\n`);
    }));

  volume.command('changes <name>')
    .description('tracks written since the change tracker was last reset (for incremental copies)')
    .option('--reset', 'start a new interval: clear the tracker (durably) and show the result')
    .action((name: string, opts: { reset?: boolean }) => run(async (client, globals) => {
      const path = `/v1/volumes/${encodeURIComponent(name)}/changes`;
      const changes = opts.reset ? await client.request<ChangesJson>('POST', `${path}/reset`) : await client.request<ChangesJson>('GET', path);
      if (globals.json) return printJson(changes);
      process.stdout.write(`${changes.changedTracks} of ${changes.trackCount} tracks (${formatSize(changes.trackBytes)} each) changed\n`);
      for (const r of changes.runs.slice(0, 50)) {
        process.stdout.write(`  tracks ${r.start}-${r.end - 1}  bytes ${r.start * changes.trackBytes}-${r.end * changes.trackBytes - 1}\n`);
      }
      if (changes.runs.length > 50 || changes.nextTrack !== null) process.stdout.write('  … more runs (use --json)\n');
    }));
}
