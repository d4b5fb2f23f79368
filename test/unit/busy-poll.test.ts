// BusyPoll keeps the event loop polling (a chain of immediates) for its window after input, then lets
// it sleep; a window of 0 never polls. The clock is the test's, the immediates are real.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BusyPoll, MAX_POLL_US } from '../../src/adapters/net/busy-poll.js';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('input keeps the loop polling until the window after the latest input has passed', async () => {
  let now = 0;
  const poll = new BusyPoll(500, () => now);
  assert.equal(poll.polling, false);
  poll.activity();
  assert.equal(poll.polling, true);
  for (let i = 0; i < 5; i++) await turn();
  assert.equal(poll.polling, true, 'still inside the window');
  now = 0.4;
  poll.activity(); // the window now ends at 0.9 ms
  now = 0.6;
  for (let i = 0; i < 3; i++) await turn();
  assert.equal(poll.polling, true, 'the second input moved the end');
  now = 0.9;
  await turn();
  await turn();
  assert.equal(poll.polling, false, 'the loop may sleep again');
});

test('a window of 0 never polls; stop() ends polling for good', async () => {
  const now = 0;
  const off = new BusyPoll(0, () => now);
  off.activity();
  assert.equal(off.enabled, false);
  assert.equal(off.polling, false);

  const poll = new BusyPoll(MAX_POLL_US, () => now);
  poll.activity();
  poll.stop();
  await turn();
  await turn();
  assert.equal(poll.polling, false);
  poll.activity();
  assert.equal(poll.polling, false, 'no polling after stop');
});

test('the window is a whole number of µs within the limit', () => {
  for (const bad of [-1, 1.5, MAX_POLL_US + 1, Number.NaN]) assert.throws(() => new BusyPoll(bad), RangeError, String(bad));
});
