// tidemark array …: start (run an array in the foreground), show.
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { printFields, printJson, type GlobalOptions } from './output.js';
import type { HostPort, RunningArray } from '../app/daemon.js';
import { invalidArgument } from '../core/errors.js';
import { maxExtentsPerSlot, DEFAULT_ACTIVITY_LOG } from '../core/bitmap/activity-log.js';
import type { NbdTlsMode } from '../core/nbd/connection.js';
import { parseSize } from './sizes.js';
import { formatDurationMs, parseDurationMs } from './durations.js';
import { MAX_FLUSH_ROUND_AFTER_MS, MIN_FLUSH_ROUND_AFTER_MS, isFlushRoundAfterMs } from '../core/replication/clean-round.js';
import { ROUTED_COMMAND_POLICIES, type RoutedCommandPolicy } from '../core/routing/route-decision.js';
import { MAX_POLL_US, isPollWindowUs } from '../adapters/net/busy-poll.js';

const NBD_TLS_MODES: readonly NbdTlsMode[] = ['off', 'optional', 'require'];

export function parseHostPort(text: string, what: string): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalidArgument(`invalid ${what} address ${JSON.stringify(text)}: use HOST:PORT, e.g. 127.0.0.1:7480`);
  }
  return { host: match[1] ?? match[2]!, port };
}

/** A name for --api-host: a DNS name (no port, no scheme) or `*`. */
function parseHostName(text: string): string {
  const name = text.trim().toLowerCase().replace(/\.$/, '');
  if (name !== '*' && !/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name)) {
    throw invalidArgument(`invalid --api-host ${JSON.stringify(text)}: give a host name such as array1.example.com (no port)`);
  }
  return name;
}

interface StartOptions {
  data: string; name?: string; api: string; apiHost: string[]; tlsCert?: string; tlsKey?: string; tlsCa?: string; nbdTls: string; nbdIdleTimeout?: string; nbdReplyBuffer: string; nbd: string; nbdSocket?: string; noNbdTcp?: boolean; link?: string; linkStreams: string; alExtents: string; pollUs: string; flushRoundAfter: string; routedCommands: string;
}

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

const hostPort = (a: HostPort): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

interface ArrayInfoJson {
  name: string; version: string; startedAt: string; uptimeSeconds: number; api: HostPort;
  nbd: { tcp: HostPort | null; socket: string | null }; volumeCount: number;
}

export function registerArrayCommands(program: Command, run: (action: Run) => Promise<void>, version: string): void {
  const array = program.command('array').description('run an array or show one');

  array.command('start')
    .description('run one array in the foreground (stop with SIGTERM or Ctrl-C)')
    .addHelpText('after', `
The data directory is made private (mode 700) and every file in it is created mode 600. At the first
start the array writes two API tokens there, never replaced afterwards:
  DIR/api-token       full access: give it to the CLI with --token-file DIR/api-token
  DIR/api-token.read  GET requests only, e.g. for monitoring scripts
Every API request except GET /metrics needs the header "Authorization: Bearer TOKEN"; see docs/security.md.`)
    .requiredOption('--data <dir>', 'data directory (created if missing, made private): volumes, metadata, activity logs, API tokens')
    .option('--name <name>', 'array name (default: the data directory name)')
    .option('--api <host:port>', 'HTTP API address', '127.0.0.1:7480')
    .option('--api-host <name>', 'a host name clients use to reach the API (repeatable); requests with any other name in their ' +
      'Host header are refused (DNS rebinding). IP addresses, localhost and the --api host are always accepted; * accepts any',
    (value: string, previous: string[]) => [...previous, value], [] as string[])
    .option('--tls-cert <file>', 'serve the API over HTTPS with this certificate (PEM, with its chain); needs --tls-key')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option('--nbd <host:port>', 'NBD TCP address', '127.0.0.1:10809')
    .option('--nbd-socket <path>', 'also serve NBD on this Unix socket')
    .option('--nbd-tls <mode>', 'NBD STARTTLS with the --tls-cert/--tls-key pair: off, optional (plain and TLS clients) or ' +
      'require (plain-text clients refused)', 'off')
    .option('--tls-ca <file>', 'CA (PEM) for NBD client certificates: with it every TLS client must present a certificate it ' +
      'signed, whose CN/subjectAltNames are matched by "volume set-access"; needs --nbd-tls')
    .option('--nbd-idle-timeout <seconds>', 'close NBD connections that send nothing for this long while no request runs (default: never)')
    .option('--nbd-reply-buffer <size>', 'NBD reply bytes buffered across all connections; at the cap no connection takes new ' +
      'requests and new connections are refused', '256MiB')
    .option('--link <host:port>', 'replication link listener for peer arrays (default: none; needed on both arrays of a pair)')
    .option('--link-streams <n>', 'parallel TCP connections per peer link (1-16; packets are spread over them and reassembled in order)', '1')
    .option('--routed-commands <policy>', 'what commands peers route to this array (--via) may do: allow (what the API token ' +
      'allows), read-only (GET only) or refuse; passing routes on to peers is not affected', 'allow')
    .option('--al-extents <n>', 'activity-log size: hot 4 MiB extents before bitmaps are persisted (16-1000)', '1000')
    .option('--poll-us <µs>', `after an NBD request or a link message arrives, keep polling for this long instead of sleeping (0-${MAX_POLL_US}): ` +
      'lower latency at low queue depth, for CPU spent while nearly idle (docs/performance.md)', '0')
    .option('--flush-round-after <duration>', 'a pair\'s R1 makes R2 durable and clears its bits once data R2 acknowledged (sync writes, async cycles) has waited this ' +
      `long unflushed, or 64 MiB per second of it has (${formatDurationMs(MIN_FLUSH_ROUND_AFTER_MS)}-${formatDurationMs(MAX_FLUSH_ROUND_AFTER_MS)}): ` +
      'longer writes back less under heavy writes from hosts that never flush, and leaves more tracks to compare after a crash (docs/performance.md)', '1s')
    .action(async (opts: StartOptions) => {
      const alExtents = Number(opts.alExtents);
      const max = maxExtentsPerSlot(DEFAULT_ACTIVITY_LOG.slotBytes);
      // The daemon's modules (fastify, prom-client, pino) load only here, so other commands start fast.
      const { startArray } = await import('../app/daemon.js');
      const { createLogger } = await import('../app/logger.js');
      const { installFaultPolicy } = await import('../app/fault-policy.js');
      const logger = createLogger(opts.name ?? 'array');
      const startedAtMs = Date.now();
      // Signals are handled from the first moment: one that arrives while the array is starting
      // stops it as soon as start-up completes, with the same clean shutdown.
      let running: RunningArray | undefined;
      let stopRequested: string | undefined;
      let stopping = false;
      const stop = (signal: string): void => {
        stopRequested = signal;
        if (!running || stopping) return;
        stopping = true;
        logger.info({ signal }, 'array stopping');
        running.stop().then(() => {
          logger.info({}, 'array stopped cleanly');
          process.exit(0);
        }, (error: unknown) => {
          logger.error({ err: (error as Error).message }, 'array stop failed');
          process.exit(1);
        });
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      // An exception nothing caught is a bug: log it and exit non-zero, never run on (fault-policy.ts).
      installFaultPolicy(logger, () => ({
        phase: stopping ? 'stopping' : running ? 'running' : 'starting',
        data: opts.data, uptimeSeconds: (Date.now() - startedAtMs) / 1000,
      }));
      try {
        const linkStreams = Number(opts.linkStreams);
        if (!Number.isInteger(linkStreams) || linkStreams < 1 || linkStreams > 16) throw invalidArgument('--link-streams must be a whole number from 1 to 16');
        if (!Number.isInteger(alExtents) || alExtents < 16 || alExtents > max) {
          throw invalidArgument(`--al-extents must be a whole number from 16 to ${max}`);
        }
        if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw invalidArgument('--tls-cert and --tls-key go together');
        if (!(NBD_TLS_MODES as readonly string[]).includes(opts.nbdTls)) throw invalidArgument(`--nbd-tls must be one of ${NBD_TLS_MODES.join(', ')}`);
        const idleSeconds = opts.nbdIdleTimeout === undefined ? undefined : Number(opts.nbdIdleTimeout);
        if (idleSeconds !== undefined && !(Number.isFinite(idleSeconds) && idleSeconds > 0 && idleSeconds <= 86_400)) {
          throw invalidArgument('--nbd-idle-timeout must be a number of seconds from 0 (exclusive) to 86400');
        }
        if (!(ROUTED_COMMAND_POLICIES as readonly string[]).includes(opts.routedCommands)) {
          throw invalidArgument(`--routed-commands must be one of ${ROUTED_COMMAND_POLICIES.join(', ')}`);
        }
        const pollUs = Number(opts.pollUs);
        if (!isPollWindowUs(pollUs)) throw invalidArgument(`--poll-us must be a whole number from 0 to ${MAX_POLL_US}`);
        const flushRoundAfterMs = parseDurationMs(opts.flushRoundAfter, '--flush-round-after');
        if (!isFlushRoundAfterMs(flushRoundAfterMs)) {
          throw invalidArgument(`--flush-round-after must be from ${formatDurationMs(MIN_FLUSH_ROUND_AFTER_MS)} to ${formatDurationMs(MAX_FLUSH_ROUND_AFTER_MS)}`);
        }
        const replyBuffer = parseSize(opts.nbdReplyBuffer);
        if (replyBuffer < 1024 * 1024) throw invalidArgument('--nbd-reply-buffer must be at least 1MiB');
        const name = opts.name ?? (opts.data.replace(/\/+$/, '').split('/').pop() || 'array');
        running = await startArray({
          dataDir: opts.data, name, api: parseHostPort(opts.api, 'API'), apiHosts: opts.apiHost.map(parseHostName),
          apiTls: opts.tlsCert !== undefined && opts.tlsKey !== undefined ? { certFile: opts.tlsCert, keyFile: opts.tlsKey } : undefined, nbd: parseHostPort(opts.nbd, 'NBD'),
          nbdSocket: opts.nbdSocket, nbdTls: opts.nbdTls as NbdTlsMode, tlsCaFile: opts.tlsCa,
          nbdIdleTimeoutMs: idleSeconds === undefined ? undefined : idleSeconds * 1000, nbdReplyBufferBytes: replyBuffer, link: opts.link ? parseHostPort(opts.link, 'link') : undefined, linkStreams, alExtents, pollUs, flushRoundAfterMs,
          routedCommands: opts.routedCommands as RoutedCommandPolicy, version, logger: logger.child({ array: name }),
        });
        logger.info({
          api: hostPort(running.api), apiTls: running.apiTls, nbdTls: running.nbdTls, nbd: running.nbd ? hostPort(running.nbd) : null, nbdSocket: running.nbdSocket ?? null,
          link: running.link ? hostPort(running.link) : null, pollUs, flushRoundAfterMs,
          data: opts.data,
        }, 'array started');
        if (stopRequested) stop(stopRequested);
      } catch (error) {
        const e = error as Error & { code?: string };
        logger.fatal({ err: e.message, code: e.code }, 'array failed to start');
        process.stderr.write(`tidemark: array failed to start: ${e.message}${e.code ? ` [${e.code}]` : ''}\n`);
        process.exit(1);
      }
    });

  array.command('show')
    .description('describe the array the CLI talks to')
    .action(() => run(async (client, globals) => {
      const info = await client.request<ArrayInfoJson>('GET', '/v1/array');
      if (globals.json) return printJson(info);
      const address = (a: HostPort | null): string => (a ? hostPort(a) : '-');
      printFields([
        ['name', info.name], ['version', info.version], ['started', info.startedAt],
        ['uptime', `${Math.round(info.uptimeSeconds)} s`], ['api', address(info.api)],
        ['nbd', address(info.nbd.tcp)], ['nbd socket', info.nbd.socket ?? '-'], ['volumes', info.volumeCount],
      ]);
    }));
}
