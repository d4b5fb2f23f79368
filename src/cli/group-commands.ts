// tidemark group …: consistency groups of async pairs across arrays (SPEC §5).
import type { Command } from 'commander';
import { resolveToken, type ApiClient } from './api-client.js';
import { printFields, printJson, printTable, type GlobalOptions } from './output.js';
import { ErrorCode, TidemarkError, invalidArgument } from '../core/errors.js';
import type { GroupRecoveryBody, GroupViewBody } from '../adapters/http/group-routes.js';

// The API's own shapes (type-only: the CLI still talks to the array over HTTP alone).
type GroupJson = GroupViewBody;
type RecoveryJson = GroupRecoveryBody;

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

const path = (name: string): string => `/v1/groups/${encodeURIComponent(name)}`;
const tagText = (tag: number | null): string => (tag === null ? '-' : String(tag));

function showGroup(g: GroupJson): void {
  printFields([
    ['group', g.name], ['coordinator', g.coordinator], ['cycle', `${g.cycleMs} ms`], ['phase', g.phase], ['tag', g.tag],
    ['switches', g.switches], ['last switch', `${g.lastSwitchAgeSeconds.toFixed(1)} s ago`], ['lag', `${g.lagSeconds.toFixed(1)} s`],
    ...(g.waitingFor.length > 0 ? [['waiting for', g.waitingFor.join(', ')] as [string, string]] : []),
    ...(g.stalled ? [['STALLED', g.stalled.cause] as [string, string]] : []),
  ]);
  process.stdout.write('\n');
  printTable(['MEMBER', 'R2', 'STATE', 'TAG', 'CAPTURE', 'TRANSMIT', 'COMMITTED', 'READY', 'LAG'], g.members.map((m) => {
    const s = m.status;
    if (!s) return [m.member, `${m.r2Array}/${m.r2Volume}`, `unreachable: ${m.error ?? '?'}`, '', '', '', '', '', ''];
    return [m.member, `${m.r2Array}/${m.r2Volume}`, s.pairState, tagText(s.captureTag), tagText(s.captureCycle), tagText(s.transmitCycle),
      tagText(s.committedCycle), s.ready ? 'yes' : 'no', `${s.lagSeconds.toFixed(1)} s`];
  }));
  for (const e of g.evicted) process.stdout.write(`out of the group ${e.member}: ${e.reason}\n`);
}

function showRecovery(r: RecoveryJson): void {
  printTable(['MEMBER', 'R2', 'COMMITTED TAG', 'RECEIVED', 'ACTION', 'ENDS AT TAG', 'WHY'], r.members.map((m) => [
    m.member, `${m.r2Array}/${m.r2Volume}`, tagText(m.committedTag),
    m.receivedComplete === null ? '-' : `${tagText(m.receivedTag)} (${m.receivedComplete ? 'complete' : 'incomplete'})`,
    m.action, tagText(m.resultTag), m.reason,
  ]));
  if (r.carriedOut) {
    process.stdout.write(`\ngroup ${r.group} recovered: every R2 holds its R1's image at tag ${tagText(r.targetTag)}. ` +
      `Fail the pairs over to use them: tidemark pair failover PAIR (on each R2's array).\n`);
  } else if (!r.consistent) {
    process.stdout.write(`\nnothing changed: the members cannot reach one tag:\n${r.problems.map((p) => `  ${p}\n`).join('')}`);
  } else {
    process.stdout.write(`\ndry run: nothing changed; the group would end at tag ${tagText(r.targetTag)}.\n`);
  }
}

export function registerGroupCommands(program: Command, run: (action: Run) => Promise<void>): void {
  const group = program.command('group')
    .description('consistency groups: async pairs on several arrays whose R2 images stay consistent with each other');
  group.command('create <name>')
    .description('create a group; the coordinator array switches every member\'s cycles together')
    .option('--coordinator <url>', 'API URL of the array that coordinates the group (default: the array you talk to)')
    .option('--coordinator-token-file <file>', 'that array\'s API token (default: the token given for the array you talk to)')
    .option('--cycle-ms <ms>', 'time between cycle switches (≥ 100)', '1000')
    .action((name: string, opts: { coordinator?: string; coordinatorTokenFile?: string; cycleMs: string }) => run(async (client, globals) => {
      const cycleMs = Number(opts.cycleMs);
      if (!Number.isSafeInteger(cycleMs) || cycleMs < 100) throw invalidArgument('--cycle-ms must be a whole number of at least 100');
      const token = opts.coordinatorTokenFile === undefined ? undefined : await resolveToken(opts.coordinatorTokenFile, {});
      const target = opts.coordinator ? client.withUrl(opts.coordinator, token) : client;
      const g = await target.request<GroupJson>('POST', '/v1/groups', { name, cycleMs });
      if (globals.json) printJson(g);
      else process.stdout.write(`created group ${g.name}, coordinated by ${g.coordinator}, cycle ${g.cycleMs} ms\n`);
    }));
  group.command('add <name> <pair>')
    .description('add an async pair (PAIR: its R1 volume on the array you talk to); the group\'s coordinator must be that array or one of its peers')
    .action((name: string, pair: string) => run(async (client, globals) => {
      const g = await client.request<GroupJson>('POST', `${path(name)}/members`, { pair });
      if (globals.json) printJson(g);
      else process.stdout.write(`added ${pair} to group ${name} (${g.members.length} members, tag ${g.tag})\n`);
    }));
  group.command('remove <name> <pair>')
    .description('remove a member (PAIR: its R1 volume on the array you talk to); the pair goes on in async mode on its own')
    .action((name: string, pair: string) => run(async (client, globals) => {
      const g = await client.request<GroupJson>('DELETE', `${path(name)}/members/-/${encodeURIComponent(pair)}`);
      if (globals.json) printJson(g);
      else process.stdout.write(`removed ${pair} from group ${name} (${g.members.length} members left)\n`);
    }));
  group.command('list').description('groups this array coordinates or holds members of').action(() => run(async (client, globals) => {
    const { groups } = await client.request<{ groups: Array<{ name: string; coordinator: string; members: number }> }>('GET', '/v1/groups');
    if (globals.json) return printJson({ groups });
    printTable(['GROUP', 'COORDINATOR', 'MEMBERS'], groups.map((g) => [g.name, g.coordinator, String(g.members)]));
  }));
  group.command('show <name>')
    .description('phase, tag and per member: cycles, readiness and lag (any member\'s array asks the coordinator)')
    .action((name: string) => run(async (client, globals) => {
      const g = await client.request<GroupJson>('GET', path(name));
      if (globals.json) printJson(g);
      else showGroup(g);
    }));
  group.command('delete <name>').description('delete a group that has no members (on its coordinator)')
    .action((name: string) => run(async (client, globals) => {
      const r = await client.request<unknown>('DELETE', path(name));
      if (globals.json) printJson(r);
      else process.stdout.write(`deleted group ${name}\n`);
    }));
  group.command('takeover <name>')
    .description('make the array you talk to the group\'s coordinator after the old one was lost (it must hold a member, R1 or R2)')
    .option('--force', 'take over although the old coordinator still answers')
    .action((name: string, opts: { force?: boolean }) => run(async (client, globals) => {
      const g = await client.request<GroupJson>('POST', `${path(name)}/takeover`, { force: opts.force === true });
      if (globals.json) printJson(g);
      else process.stdout.write(`${g.coordinator} now coordinates group ${name} (tag ${g.tag}, ${g.members.length} members)\n`);
    }));
  group.command('recover <name>')
    .description('after losing the R1 side: bring every R2 member to one tag (apply or discard received cycles); run on an array holding an R2 member')
    .option('--dry-run', 'decide and print, change nothing')
    .option('--force', 'recover although a member\'s link to its R1 is up')
    .action((name: string, opts: { dryRun?: boolean; force?: boolean }) => run(async (client, globals) => {
      const r = await client.request<RecoveryJson>('POST', `${path(name)}/recover`, { dryRun: opts.dryRun === true, force: opts.force === true });
      if (globals.json) printJson(r);
      else showRecovery(r);
      if (!r.carriedOut && !r.consistent) throw new TidemarkError(ErrorCode.InvalidState, `group ${name} was not recovered`);
    }));
}
