// The API's view of consistency groups on one array.
import type { GroupBackend, GroupRecoveryBody } from '../../adapters/http/group-routes.js';
import type { GroupManager } from './group-manager.js';
import type { GroupRecoveryReport } from './group-member.js';

export function groupBackend(groups: () => GroupManager): GroupBackend {
  return {
    create: (name, cycleMs) => groups().create(name, cycleMs),
    list: () => groups().list(),
    show: (name) => groups().show(name),
    delete: (name) => groups().delete(name),
    add: (name, pair, array) => groups().add(name, pair, array),
    remove: (name, pair, array) => groups().remove(name, pair, array),
    recover: async (name, dryRun, force) => recoveryBody(await groups().recover(name, { dryRun, force })),
    takeOver: (name, force) => groups().takeOver(name, { force }),
  };
}

function recoveryBody(report: GroupRecoveryReport): GroupRecoveryBody {
  const { decision } = report;
  return {
    group: report.group, carriedOut: report.carriedOut, targetTag: decision.targetTag, consistent: decision.consistent, problems: [...decision.problems],
    members: report.members.map((m) => {
      const d = decision.members.find((x) => x.member === m.member)!;
      return {
        member: m.member, r2Array: m.r2Array, r2Volume: m.r2Volume, action: d.action, reason: d.reason,
        committedTag: m.input.committedTag, receivedTag: m.input.received?.tag ?? null, receivedComplete: m.input.received?.complete ?? null,
        resultTag: d.resultTag, appliedCycle: m.appliedCycle ?? null,
      };
    }),
  };
}
