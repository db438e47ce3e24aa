// @ts-check
/**
 * Three-vectors in patient space (mm), as plain [x, y, z] arrays: the few
 * operations the geometry of image planes and slice ordering needs.
 */

/** @typedef {number[]} Vec3 */

/** @param {Vec3} a @param {Vec3} b @returns {Vec3} */
export const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];

/** @param {Vec3} a @param {Vec3} b @returns {Vec3} */
export const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];

/** @param {Vec3} a @param {number} k @returns {Vec3} */
export const mul = (a, k) => [a[0] * k, a[1] * k, a[2] * k];

/** @param {Vec3} a @param {Vec3} b @returns {number} */
export const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];

/** @param {Vec3} a @param {Vec3} b @returns {Vec3} */
export const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

/** @param {Vec3} a @returns {number} */
export const norm = (a) => Math.hypot(a[0], a[1], a[2]);
