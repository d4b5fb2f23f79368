// The NBD server's shared reply budget: full at the cap, wakes waiting sessions in turn when room
// frees, so a session late in line is not starved by those before it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplyBudget } from '../../src/adapters/nbd-server/reply-budget.js';

test('full at the cap; the peak is kept; giving back below the cap wakes waiters', () => {
  const budget = new ReplyBudget(100);
  budget.take(60);
  assert.equal(budget.full, false);
  budget.take(50);
  assert.equal(budget.full, true);
  assert.equal(budget.peakBytes, 110);
  let woken = 0;
  budget.onRoom(() => { woken++; });
  budget.give(5);
  assert.equal(woken, 0, 'still at the cap');
  budget.give(50);
  assert.equal(woken, 1);
  assert.equal(budget.bufferedBytes, 55);
  assert.throws(() => budget.give(56), /negative/);
});

test('room goes to waiting sessions in turn: each wake that fills the budget sends the waker to the back', () => {
  const budget = new ReplyBudget(10);
  budget.take(10);
  const taken: string[] = [];
  for (const name of ['a', 'b', 'c']) {
    budget.onRoom(() => {
      if (budget.full) return;
      budget.take(10); // this session takes the whole room
      taken.push(name);
    });
  }
  for (let i = 0; i < 6; i++) budget.give(10);
  assert.deepEqual(taken, ['a', 'b', 'c', 'a', 'b', 'c']);
});

test('a waiter that stops waiting is not woken', () => {
  const budget = new ReplyBudget(10);
  budget.take(10);
  let woken = 0;
  const stop = budget.onRoom(() => { woken++; });
  stop();
  budget.give(10);
  assert.equal(woken, 0);
});
