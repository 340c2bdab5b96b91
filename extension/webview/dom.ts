/** DOM helpers for the webview: elements get text only (textContent), never HTML. */

import type {TraceQueries} from '../shared/traces/trace';
import {displayToken} from '../shared/display';

export const SVG = 'http://www.w3.org/2000/svg';

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

export function byId<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`missing #${id}`);
  return found as T;
}

export const fmt = (v: number, digits = 3) => (Number.isFinite(v) ? v.toFixed(digits) : String(v));
/** A vocabulary token (a prediction, a promoted token) quoted for display; still text. */
export const quoted = (text: string) => `“${displayToken(text)}”`;

/** The token at `position` of the trace as displayed everywhere (a byte piece from its bytes). */
export function shownToken(q: TraceQueries, position: number): string {
  return displayToken(q.trace.tokens.strings[position] ?? '', {bytes: q.trace.tokens.bytes[position] ?? null});
}

/** The token at `position` of the trace, quoted for display (still text, never markup). */
export function tokenAt(q: TraceQueries, position: number): string {
  return `“${shownToken(q, position)}”`;
}
