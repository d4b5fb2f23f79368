// The core machine's synchronous view of the array's volumes as NBD exports.
import type { ExportDirectory, ExportInfo } from '../../core/nbd/connection.js';
import type { ExportCatalog, NbdVolume } from './types.js';

/** The core's view of the catalog: the default export "" is the only volume when there is exactly one. */
export function directoryOf(catalog: ExportCatalog): ExportDirectory {
  const infoOf = (volume: NbdVolume): ExportInfo => ({
    name: volume.name,
    sizeBytes: volume.geometry.sizeBytes,
    readOnly: volume.state !== 'ready',
    canFastZero: volume.canFastZero,
    description: `tidemark volume ${volume.name} (${volume.state})`,
    allowedClients: volume.allowedClients,
  });
  return {
    list: () => catalog.volumeNames().flatMap((name) => {
      const volume = catalog.findVolume(name);
      return volume && volume.state !== 'not-ready' ? [infoOf(volume)] : [];
    }),
    lookup: (requested) => {
      const names = catalog.volumeNames();
      const name = requested === '' && names.length === 1 ? names[0]! : requested;
      const volume = catalog.findVolume(name);
      if (!volume) return { kind: 'unknown' };
      if (volume.state === 'not-ready') return { kind: 'refused', message: `volume ${name} is not ready for host access` };
      return { kind: 'found', info: infoOf(volume) };
    },
  };
}
