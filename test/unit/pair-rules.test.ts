// The pair's command rules (core/replication/pair-rules.ts): intents, generations, who changes first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PairRecord } from '../../src/core/replication/pair-record.js';
import { checkCommand, intentChange, volumeStateFor, type PairCommand } from '../../src/core/replication/pair-rules.js';

const base: PairRecord = {
  id: 'east.db.x', name: 'db', role: 'R1', localVolume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', intent: 'replicating',
  onLinkFailure: 'continue', generation: 5, diverged: false, protectWith: null, extents: null, cycleMs: 1000,
  cycleMemoryBytes: 64 * 1024 * 1024, spillLimitBytes: 0, minAgeMs: 0, createdAtMs: 0,
};
const COMMANDS: PairCommand[] = ['establish', 'resume', 'suspend', 'split', 'failover', 'failback', 'restore', 'swap'];
const INTENTS = ['replicating', 'suspended', 'split', 'failed-over', 'restoring'] as const;

test('a new generation exactly when the images part or one side wins; suspend and resume keep the lineage', () => {
  const from = (command: PairCommand, intent: PairRecord['intent']): number => intentChange(command, { ...base, intent }).generation;
  assert.equal(from('suspend', 'replicating'), 5);
  assert.equal(from('resume', 'suspended'), 5);
  assert.equal(from('split', 'replicating'), 6);
  assert.equal(from('failover', 'replicating'), 6);
  assert.equal(from('restore', 'split'), 6);
  assert.equal(from('failback', 'failed-over'), 6);
  assert.equal(from('swap', 'replicating'), 6);
  assert.equal(from('establish', 'split'), 6);
  assert.equal(from('establish', 'replicating'), 5, 'establish of a replicating pair re-ships R2 changes in the same lineage');
});

test('never both writable by accident: R2 changes first when it must stop, last when it may start', () => {
  for (const command of COMMANDS) {
    for (const intent of INTENTS) {
      const record = { ...base, intent };
      try {
        checkCommand(command, record);
      } catch {
        continue; // not allowed from this intent
      }
      const change = intentChange(command, record);
      const r2Ready = volumeStateFor('R2', change.intent) === 'ready';
      const r1Ready = volumeStateFor('R1', change.intent) === 'ready';
      // A split makes both writable on purpose (each tracks its own changes); nothing else does.
      assert.equal(r1Ready && r2Ready, change.intent === 'split', `${command} from ${intent}`);
      // R2 becoming writable while R1 still is (before R1 changed) is what the order prevents.
      if (r2Ready) assert.equal(change.r2First, false, `${command} from ${intent}: R2 may become writable only after R1 stopped`);
      // R1 staying writable while R2 is still writable (before R2 changed) is what the order prevents.
      if (r1Ready && volumeStateFor('R2', intent) === 'ready') {
        assert.equal(change.r2First, true, `${command} from ${intent}: R2 must stop before R1 goes on`);
      }
    }
  }
});
