// @ts-check
/**
 * The window presets (CT windows in Hounsfield units), one list for the
 * preset menu and the number keys: keys 1 to 6 apply them in this order, 7 the
 * image's own default window ('default'), and 'full' spans the frame's range.
 */

/** @type {Readonly<Record<string, import('./pixels.js').Window>>} */
export const PRESETS = Object.freeze({
  'soft tissue': { center: 40, width: 400 },
  lung: { center: -600, width: 1500 },
  bone: { center: 400, width: 1800 },
  brain: { center: 40, width: 80 },
  abdomen: { center: 60, width: 400 },
  mediastinum: { center: 50, width: 350 },
});
