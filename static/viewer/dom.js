// @ts-check
/**
 * The few DOM helpers the viewer's pages share: building an element (text is
 * always set with textContent, never parsed as HTML) and finding one the page
 * is known to carry.
 */

/**
 * A new element with a class, appended to `parent` and holding `text` when given.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} [cls]
 * @param {Element | null} [parent]
 * @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

/**
 * The element of the page with this id and type; a page without it is a bug.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {{new (): T, prototype: T}} type
 * @returns {T}
 */
export function byId(id, type) {
  const e = document.getElementById(id);
  if (!(e instanceof type)) throw new Error(`the page has no #${id}`);
  return e;
}
