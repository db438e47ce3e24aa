// @ts-check
/**
 * The viewer page's script (the entry point viewer/bundle.py starts from):
 * builds the application on the page's #viewer and starts loading its study,
 * and keeps the reader's claim alive while the page is open (services/heartbeat.js).
 * Only a page opened with `#bench` keeps benchmark counters and exposes the
 * application as `window.__viewer` and the counters as `window.__viewerStats`
 * (see stats.js); a normal page leaves no global behind.
 */

import { ViewerApp } from './app.js';
import { PRESETS } from './presets.js';
import { startHeartbeat } from './services/heartbeat.js';
import { benchRequested } from './stats.js';

const root = document.getElementById('viewer');
if (root) {
  const bench = benchRequested(location);
  const app = new ViewerApp(root, { stats: bench });
  if (bench) Object.assign(window, { __viewer: app, __viewerStats: app.stats });
  app.start();
  startHeartbeat(root);
}

export { ViewerApp, PRESETS };
