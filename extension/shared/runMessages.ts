/**
 * Messages between the extension host and the run view webview (a corpus run folder's heatmap:
 * extension/host/runView.ts, extension/webview/runView.ts): one union per direction, imported by
 * both sides (no `vscode`, no DOM here), checked on arrival since `postMessage` is untyped.
 *
 * Host -> webview: `run` carries an lmscope/run answer (the run, the chosen statistic of every
 * head and FFN block, the selected component's top prompts); `runError` says why there is none.
 * Webview -> host: `ready` once its listener is installed, `query` for a view of the run (the
 * first right after `ready`; then on every change of statistic, τ, tag or selection), `openTrace`
 * to open one prompt's trace (its path relative to the run folder, as the answer gave it),
 * `error` to log a webview-side failure.
 */

import type {RunComponent, RunResult} from './protocol/types';

/** What the run view shows: lmscope/run's params without the path (the host's). */
export interface RunQuery {
  readonly stat: 'meanShare' | 'onRoute';
  readonly threshold: 0.01 | 0.04 | 0.1;
  /** null: every prompt. */
  readonly tag: string | null;
  /** The selected head or FFN block; null: none. */
  readonly component: RunComponent | null;
}

/** The thresholds a run records on-route flags for (run.params.schema.json `threshold`). */
export const RUN_THRESHOLDS: readonly RunQuery['threshold'][] = [0.01, 0.04, 0.1];

/** The answer to the webview's `query` number `id`. */
export interface RunMessage {
  readonly type: 'run';
  readonly id: number;
  readonly result: RunResult;
}

/** Why the `query` number `id` has no answer (the daemon's one-line error). */
export interface RunErrorMessage {
  readonly type: 'runError';
  readonly id: number;
  readonly message: string;
}

export type HostToRunView = RunMessage | RunErrorMessage;

export interface RunReadyMessage {
  readonly type: 'ready';
}

export interface RunQueryMessage {
  readonly type: 'query';
  /** Chosen by the webview, increasing; echoed in the answer (an older answer is stale). */
  readonly id: number;
  readonly query: RunQuery;
}

export interface OpenTraceMessage {
  readonly type: 'openTrace';
  /** The prompt's trace, relative to the run folder (RunTopPrompt.trace). */
  readonly trace: string;
}

export interface RunViewErrorMessage {
  readonly type: 'error';
  readonly message: string;
}

export type RunViewToHost = RunReadyMessage | RunQueryMessage | OpenTraceMessage | RunViewErrorMessage;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const isCount = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0;

export function isRunComponent(value: unknown): value is RunComponent {
  if (!isRecord(value) || !isCount(value['layer'])) return false;
  if (value['kind'] === 'head') return isCount(value['index']);
  return value['kind'] === 'ffn' && value['index'] === undefined;
}

export function isRunQuery(value: unknown): value is RunQuery {
  return (
    isRecord(value) &&
    (value['stat'] === 'meanShare' || value['stat'] === 'onRoute') &&
    RUN_THRESHOLDS.includes(value['threshold'] as RunQuery['threshold']) &&
    (value['tag'] === null || (typeof value['tag'] === 'string' && value['tag'] !== '')) &&
    (value['component'] === null || isRunComponent(value['component']))
  );
}

export function isRunViewToHost(value: unknown): value is RunViewToHost {
  if (!isRecord(value)) return false;
  switch (value['type']) {
    case 'ready':
      return true;
    case 'query':
      return isCount(value['id']) && isRunQuery(value['query']);
    case 'openTrace':
      return typeof value['trace'] === 'string';
    case 'error':
      return typeof value['message'] === 'string';
    default:
      return false;
  }
}

/** The shape the webview relies on: the matrix is nLayers x nHeads, the vector nLayers long. */
function isRunResult(value: unknown): value is RunResult {
  if (!isRecord(value) || !isRecord(value['run'])) return false;
  const run = value['run'];
  const heads = value['heads'], ffn = value['ffn'];
  const numbers = (row: unknown, n: unknown) => Array.isArray(row) && row.length === n && row.every((v) => typeof v === 'number');
  return (
    typeof run['name'] === 'string' && isCount(run['nLayers']) && isCount(run['nHeads']) && Array.isArray(run['tags']) &&
    Array.isArray(heads) && heads.length === run['nLayers'] && heads.every((row) => numbers(row, run['nHeads'])) &&
    numbers(ffn, run['nLayers']) && (value['component'] === null || isRecord(value['component']))
  );
}

export function isHostToRunView(value: unknown): value is HostToRunView {
  if (!isRecord(value)) return false;
  switch (value['type']) {
    case 'run':
      return isCount(value['id']) && isRunResult(value['result']);
    case 'runError':
      return isCount(value['id']) && typeof value['message'] === 'string';
    default:
      return false;
  }
}

/**
 * The path segments of a prompt's trace inside the run folder, or null when `relative` could
 * leave it (absolute, `..`, a drive, a backslash) or is no `.lmtrace` file: the host opens only
 * files of the run, whatever the webview (or a tampered run table) sends.
 */
export function traceSegments(relative: string): string[] | null {
  if (relative === '' || relative.startsWith('/') || relative.includes('\\') || relative.includes(':') || relative.includes('\0')) return null;
  const segments = relative.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) return null;
  return segments[segments.length - 1]!.endsWith('.lmtrace') ? segments : null;
}

/** A component as everyone writes it: `L12H3`, `L5.ffn`. */
export function componentLabel(component: RunComponent): string {
  return component.kind === 'head' ? `L${component.layer}H${component.index}` : `L${component.layer}.ffn`;
}
