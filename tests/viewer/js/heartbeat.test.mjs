import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Heartbeat } from '../../../static/viewer/services/heartbeat.js';

/** A clock the test moves by hand: timers fire when `advance` passes their time. */
class FakeClock {
  constructor() { this.t = 0; this.timers = new Map(); this.next = 1; }
  now() { return this.t; }
  setTimeout(fn, ms) { const id = this.next++; this.timers.set(id, { at: this.t + ms, fn }); return id; }
  clearTimeout(id) { this.timers.delete(id); }
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
      await new Promise((resolve) => setImmediate(resolve)); // let the beat's answer arrive
    }
    this.t = end;
  }
}

function heart({ status = 200, hidden = { value: false }, idleMs = undefined } = {}) {
  const clock = new FakeClock();
  const sent = [];
  const beat = new Heartbeat({
    everyMs: 30_000,
    idleMs,
    clock,
    hidden: () => hidden.value,
    send: async () => { sent.push(clock.now()); return typeof status === 'function' ? status() : status; },
  });
  return { clock, sent, beat, hidden };
}

test('a visible page beats every interval, counting from when it opened', async () => {
  const { clock, sent, beat } = heart();
  beat.start();
  await clock.advance(29_999);
  assert.deepEqual(sent, []);
  await clock.advance(61_000);
  assert.deepEqual(sent, [30_000, 60_000, 90_000]);
});

test('a hidden tab sends nothing, and beats at once when shown again if a beat is due', async () => {
  const { clock, sent, beat, hidden } = heart();
  beat.start();
  await clock.advance(10_000);
  hidden.value = true;
  beat.visibilityChanged();
  await clock.advance(300_000);
  assert.deepEqual(sent, []); // a closed or hidden viewer lets an idle claim expire
  hidden.value = false;
  beat.visibilityChanged();
  await clock.advance(0);
  assert.deepEqual(sent, [310_000]);
  await clock.advance(30_000);
  assert.deepEqual(sent, [310_000, 340_000]);
});

test('a tab hidden briefly keeps its rhythm: shown again before a beat is due, it waits for it', async () => {
  const { clock, sent, beat, hidden } = heart();
  beat.start();
  await clock.advance(5_000);
  hidden.value = true;
  beat.visibilityChanged();
  await clock.advance(10_000);
  hidden.value = false;
  beat.visibilityChanged();
  await clock.advance(15_000);
  assert.deepEqual(sent, [30_000]);
});

test('a refusal or a redirect to the sign-in stops the beats; a network error does not', async () => {
  for (const status of [0, 403, 404]) {
    const { clock, sent, beat } = heart({ status });
    beat.start();
    await clock.advance(120_000);
    assert.deepEqual(sent, [30_000], `status ${status}`);
    assert.equal(beat.stopped, true);
  }
  let calls = 0;
  const flaky = heart({ status: () => { calls += 1; if (calls === 1) throw new Error('offline'); return 200; } });
  flaky.beat.start();
  await flaky.clock.advance(60_000);
  assert.deepEqual(flaky.sent, [30_000, 60_000]);
});

test('a visible page nobody touches stops beating at the idle limit, and beats again once the reader is back', async () => {
  const { clock, sent, beat } = heart({ idleMs: 100_000 });
  beat.start();
  await clock.advance(40_000);
  beat.activity(); // the reader scrolls at 40 s, then leaves the desk
  await clock.advance(160_000);
  assert.deepEqual(sent, [30_000, 60_000, 90_000, 120_000]); // nothing from 140 s: the claim may expire
  beat.activity(); // back at 200 s
  await clock.advance(30_000);
  assert.deepEqual(sent, [30_000, 60_000, 90_000, 120_000, 210_000]);
});
