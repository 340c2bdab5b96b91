/**
 * The page's state: the VS Code webview API (acquired once per page), the view settings VS Code
 * keeps across reloads of the page (threshold, mode, output token, collapse, zoom, the legend and the panel's size), and what is
 * shown (the trace's queries and the layout of the route drawn). Other modules read and change
 * these objects; `persist` saves the settings.
 */

import {DEFAULTS, type ThresholdMode} from '../shared/protocol/types';
import type {TraceQueries} from '../shared/traces/trace';
import type {WebviewToHost} from '../shared/webviewMessages';
import type {GraphLayout} from './layout';

interface VsCodeApi {
  postMessage(message: WebviewToHost): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

export interface ViewState {
  threshold: number;
  mode: ThresholdMode;
  token: number | null; // null: the last token
  collapse: boolean;
  zoom: {k: number; x: number; y: number};
  /** The legend is unfolded. */
  legend: boolean;
  /** The details panel's size: its width beside the graph, its height below it (px). */
  panel: {side: number; below: number};
}

const api = acquireVsCodeApi();

/** Send a message to the extension host. */
export function post(message: WebviewToHost): void {
  api.postMessage(message);
}

const saved = api.getState() as Partial<ViewState> | undefined;

/** The view settings: this page's saved ones, else the protocol's defaults until `load`. */
export const view: ViewState = {
  threshold: typeof saved?.threshold === 'number' ? saved.threshold : DEFAULTS.Threshold,
  mode: saved?.mode === 'raw' || saved?.mode === 'renormalize' ? saved.mode : DEFAULTS.ThresholdMode,
  token: typeof saved?.token === 'number' ? saved.token : null,
  collapse: saved?.collapse !== false,
  zoom: saved?.zoom ?? {k: 1, x: 0, y: 0},
  legend: saved?.legend !== false,
  panel: {side: numberOr(saved?.panel?.side, 400), below: numberOr(saved?.panel?.below, 320)},
};

function numberOr(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : fallback;
}

/** Whether `view` was restored: then the host's settings and the initial fit do not apply. */
export const restored = saved !== undefined && typeof saved.threshold === 'number';

export function persist(): void {
  api.setState(view);
}

/** What the page shows: the trace's queries (null: none, or it could not be read), the layout
 * of the route drawn, and the node or edge the details panel shows (its key; null: none). */
export const shown: {queries: TraceQueries | null; layout: GraphLayout | null; selected: string | null} = {queries: null, layout: null, selected: null};

/** The output token whose route is shown (the last one unless chosen). */
export function currentToken(): number {
  return view.token ?? (shown.queries === null ? 0 : shown.queries.nTokens - 1);
}
