// The fault handler on its own: one fatal line with the context and the fault, then the exit code;
// whatever was thrown; a second fault (or a failing context) still ends in the exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EXIT_UNEXPECTED_FAULT, describeFault, faultHandler } from '../../src/app/fault-policy.js';

function harness(context: () => Record<string, unknown> = () => ({ phase: 'running' })) {
  const lines: Array<{ object: Record<string, unknown>; message: string }> = [];
  const exits: number[] = [];
  const handle = faultHandler({ fatal: (object, message) => lines.push({ object: object as Record<string, unknown>, message }) }, context,
    (code) => exits.push(code));
  return { lines, exits, handle };
}

test('an uncaught exception is logged once with context and ends in exit 70', () => {
  const { lines, exits, handle } = harness();
  handle('uncaughtException', Object.assign(new Error('boom'), { code: 'E_X', cause: new Error('root') }));
  assert.deepEqual(exits, [EXIT_UNEXPECTED_FAULT]);
  assert.equal(lines.length, 1);
  const { object, message } = lines[0]!;
  assert.match(message, /unexpected fault/);
  assert.equal(object.phase, 'running');
  assert.equal(object.fault, 'uncaughtException');
  assert.equal(object.err, 'boom');
  assert.equal(object.code, 'E_X');
  assert.equal(object.cause, 'root');
  assert.match(String(object.stack), /fault-policy\.test/);
});

test('a second fault while handling the first exits without logging again', () => {
  const { lines, exits, handle } = harness();
  handle('unhandledRejection', 'first');
  handle('uncaughtException', new Error('second'));
  assert.equal(lines.length, 1);
  assert.deepEqual(exits, [EXIT_UNEXPECTED_FAULT, EXIT_UNEXPECTED_FAULT]);
});

test('a context that throws, or a logger that throws, still ends in the exit', () => {
  const failingContext = harness(() => { throw new Error('no context'); });
  failingContext.handle('uncaughtException', new Error('boom'));
  assert.equal(failingContext.lines[0]!.object.contextError, 'Error: no context');
  assert.deepEqual(failingContext.exits, [EXIT_UNEXPECTED_FAULT]);

  const exits: number[] = [];
  const handle = faultHandler({ fatal: () => { throw new Error('log broken'); } }, () => ({}), (code) => exits.push(code));
  assert.throws(() => handle('uncaughtException', new Error('boom')), /log broken/);
  assert.deepEqual(exits, [EXIT_UNEXPECTED_FAULT]);
});

test('anything a promise can reject with is described', () => {
  assert.deepEqual(describeFault('text'), { err: 'text', errName: 'string' });
  assert.deepEqual(describeFault(undefined), { err: 'undefined', errName: 'undefined' });
  assert.deepEqual(describeFault({ a: 1 }), { err: '{"a":1}', errName: 'object' });
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.equal(describeFault(cyclic).err, '[object Object]');
  assert.equal(describeFault(12n).err, '12');
});
