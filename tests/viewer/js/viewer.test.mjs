import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PRESETS } from '../../../static/viewer/presets.js';
import { benchRequested } from '../../../static/viewer/stats.js';
import { nearest } from '../../../static/viewer/services/sync.js';
import { draggedWindow } from '../../../static/viewer/tools/windowlevel.js';

test('the presets are the six CT windows in the order of their number keys', () => {
  assert.deepEqual(Object.keys(PRESETS), ['soft tissue', 'lung', 'bone', 'brain', 'abdomen', 'mediastinum']);
  assert.deepEqual(PRESETS.lung, { center: -600, width: 1500 });
  assert.ok(Object.isFrozen(PRESETS));
});

test('only a #bench fragment asks for benchmark counters', () => {
  assert.equal(benchRequested({ hash: '#bench' }), true);
  assert.equal(benchRequested({ hash: '#bench&x=1' }), true);
  assert.equal(benchRequested({ hash: '' }), false);
  assert.equal(benchRequested({ hash: '#benchmark' }), false);
});

test('dragging window/level widens the window to the right and raises its centre downwards', () => {
  assert.deepEqual(draggedWindow({ center: 40, width: 400 }, 10, 20, 4096), { center: 120, width: 440 });
  assert.deepEqual(draggedWindow({ center: 40, width: 400 }, -1000, 0, 100), { center: 40, width: 150 });
  assert.equal(draggedWindow({ center: 0, width: 5 }, -100, 0, 1024).width, 1);
});

test('synchronized scrolling picks the slice nearest the target position', () => {
  assert.equal(nearest([40, 20, 0, -20], 7, 0), 2);
  assert.equal(nearest([40, 20, 0, -20], 100, 3), 0);
  assert.equal(nearest([], 5, 3), 3);
});
