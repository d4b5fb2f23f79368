// The tidemark command: one CLI for the daemon and every management command.
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { ApiClient, DEFAULT_ARRAY_URL, readCaFile, resolveToken, resolveVia } from '../cli/api-client.js';
import { reportError, type GlobalOptions } from '../cli/output.js';
import { registerVolumeCommands } from '../cli/volume-commands.js';
import { registerArrayCommands } from '../cli/array-commands.js';
import { registerCloneCommands } from '../cli/clone-commands.js';
import { registerReplicationCommands, relayOptionOfPeerAdd } from '../cli/replication-commands.js';
import { registerGroupCommands } from '../cli/group-commands.js';
import { registerMigrationCommands } from '../cli/migration-commands.js';
import { registerImportCommands } from '../cli/import-commands.js';
import { registerJournalCommands } from '../cli/journal-commands.js';
import { registerCascadeCommands } from '../cli/cascade-commands.js';
import { registerStatusCommand } from '../cli/status-command.js';
import { registerEventsCommand } from '../cli/events-command.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

const program = new Command('tidemark')
  .description('tidemark storage array: NBD volumes, change bitmaps, clones and replication')
  .version(version)
  .option('--array <url>', `array API URL (env TIDEMARK_ARRAY, default ${DEFAULT_ARRAY_URL})`)
  .option('--token-file <file>', 'file holding the array\'s API token, e.g. DATA/api-token (env TIDEMARK_TOKEN_FILE, or the ' +
    'token itself in TIDEMARK_TOKEN)')
  .option('--ca <file>', 'CA certificates (PEM) to verify an https:// array with (env TIDEMARK_CA_FILE; default: the system\'s)')
  .option('--via <arrays>', 'run the command on another array, reached from --array through its peers hop by hop: ' +
    'B, or B,C (C a peer of B) (env TIDEMARK_VIA)')
  .option('--json', 'machine-readable JSON output')
  .showHelpAfterError()
  .exitOverride();

/**
 * A reader that stops early (`tidemark pair list | head -1`) closes the pipe: that is its choice,
 * not a failure of the command, so the CLI ends quietly instead of dying on EPIPE. Management
 * commands only: the daemon (`array start`) keeps the fault policy for its own output.
 */
function endQuietlyOnClosedStdout(): void {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  });
}

async function run(action: (client: ApiClient, globals: GlobalOptions) => Promise<void>): Promise<void> {
  endQuietlyOnClosedStdout();
  const globals = program.opts<GlobalOptions>();
  try {
    const token = await resolveToken(globals.tokenFile, process.env);
    const ca = await readCaFile(globals.ca ?? (process.env.TIDEMARK_CA_FILE || undefined));
    const via = resolveVia(globals.via, process.env);
    const client = new ApiClient(globals.array ?? process.env.TIDEMARK_ARRAY ?? DEFAULT_ARRAY_URL, { token, ca, via });
    await action(client, globals);
  } catch (error) {
    process.exitCode = reportError(error, globals.json ?? false);
  }
}

registerArrayCommands(program, run, version);
registerVolumeCommands(program, run);
registerCloneCommands(program, run);
registerReplicationCommands(program, run);
registerGroupCommands(program, run);
registerMigrationCommands(program, run);
registerImportCommands(program, run);
registerJournalCommands(program, run);
registerCascadeCommands(program, run);
registerStatusCommand(program, run);
registerEventsCommand(program, run);

try {
  await program.parseAsync(relayOptionOfPeerAdd(process.argv));
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  } else {
    process.exitCode = reportError(error, program.opts<GlobalOptions>().json ?? false);
  }
}
