/**
 * Messages between the extension host and the flow-graph webview: one discriminated union per
 * direction, imported by both sides (no `vscode`, no DOM here). The webview trusts its host but
 * still checks the shape of what arrives, since `postMessage` is untyped at runtime.
 *
 * Host -> webview: `load` carries the `.lmtrace` bytes and the graph settings; the
 * webview decodes them with shared/traces and recomputes routes locally. `loadError`
 * replaces the graph with a message (a file that cannot be read).
 * `daemon` says whether a live daemon trace backs the graph (then drill-downs that need the
 * model work) and, when not, why. `queryResult` answers one `query`.
 * Webview -> host: `ready` once its listener is installed (the host then sends `load`),
 * `settingsChanged` so the host can remember them, `error` to log a webview-side failure,
 * `query` to ask the daemon something the file cannot answer (the host adds the trace handle),
 * `painted` once the route of a `load` is on screen (the host logs how long the graph took),
 * `export` with the shown route as an SVG document or a PNG image for the host to save.
 */

import {
  DEFAULTS,
  type AblateParams,
  type AblateResult,
  type ComponentParams,
  type ComponentResult,
  type FfnExpertsParams,
  type FfnExpertsResult,
  type FfnNeuronsParams,
  type FfnNeuronsResult,
  type HeadMapsParams,
  type HeadMapsResult,
  type ProjectionParams,
  type ProjectionResult,
  type ThresholdMode,
  type VerifyRouteParams,
  type VerifyRouteResult,
} from './protocol/types';

/** Settings the graph opens with (from the lmscope.* configuration). */
export interface GraphSettings {
  readonly threshold: number;
  readonly mode: ThresholdMode;
}

/**
 * The thresholds a graph may be set to: the bounds the protocol puts on a trace's minThreshold
 * (common.schema.json, MinThreshold; a test checks they agree), since below its minThreshold
 * no trace answers and above the largest nothing is left to show. The webview also keeps τ at
 * or above the shown trace's own minThreshold.
 */
export const THRESHOLD_RANGE = {min: 0.001, max: 0.5} as const;

/** A threshold setting made usable: clamped to THRESHOLD_RANGE; the default when not a number. */
export function graphThreshold(value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) return DEFAULTS.Threshold;
  return Math.min(THRESHOLD_RANGE.max, Math.max(THRESHOLD_RANGE.min, value));
}

export interface LoadMessage {
  readonly type: 'load';
  /** A display name of the trace (file name), shown in the header; untrusted text. */
  readonly name: string;
  /** The `.lmtrace` file's bytes: as they are (VS Code >= 1.57 transfers typed arrays without
   * copying them through JSON), or base64 text. */
  readonly bytes: Uint8Array | string;
  readonly settings: GraphSettings;
}

export interface LoadErrorMessage {
  readonly type: 'loadError';
  readonly name: string;
  readonly message: string;
}

/** Whether the graph is backed by a live daemon trace (drill-downs that need the model work). */
export interface DaemonLinkMessage {
  readonly type: 'daemon';
  readonly live: boolean;
  /** Why not, for the user, when `live` is false. */
  readonly reason: string;
}

/**
 * The daemon queries the webview may send: each protocol method's params without `handle`; the
 * causal checks (ablate, verifyRoute) also without `workDoneToken`, whose progress is the host's.
 */
export interface DaemonQueries {
  readonly 'lmscope/headMaps': {readonly params: Omit<HeadMapsParams, 'handle'>; readonly result: HeadMapsResult};
  readonly 'lmscope/component': {readonly params: Omit<ComponentParams, 'handle'>; readonly result: ComponentResult};
  readonly 'lmscope/projection': {readonly params: Omit<ProjectionParams, 'handle'>; readonly result: ProjectionResult};
  readonly 'lmscope/ffnNeurons': {readonly params: Omit<FfnNeuronsParams, 'handle'>; readonly result: FfnNeuronsResult};
  readonly 'lmscope/ffnExperts': {readonly params: Omit<FfnExpertsParams, 'handle'>; readonly result: FfnExpertsResult};
  readonly 'lmscope/ablate': {readonly params: Omit<AblateParams, 'handle' | 'workDoneToken'>; readonly result: AblateResult};
  readonly 'lmscope/verifyRoute': {readonly params: Omit<VerifyRouteParams, 'handle' | 'workDoneToken'>; readonly result: VerifyRouteResult};
}
export type DaemonQueryMethod = keyof DaemonQueries;
export const DAEMON_QUERY_METHODS: readonly DaemonQueryMethod[] = ['lmscope/headMaps', 'lmscope/component', 'lmscope/projection', 'lmscope/ffnNeurons', 'lmscope/ffnExperts', 'lmscope/ablate', 'lmscope/verifyRoute'];

export interface QueryResultMessage {
  readonly type: 'queryResult';
  readonly id: number;
  /** The daemon's result (the shape of `DaemonQueries[method].result`), absent on error. */
  readonly result?: unknown;
  /** Absent on success. `needsModel`: the daemon has no model for this trace (trace again). */
  readonly error?: {readonly message: string; readonly needsModel: boolean};
}

/** Compare two traces (the diff view, shared/diff): A's and B's bytes as in `load`; `alignLast`
 * aligns the last K tokens of traces of different lengths (the user chose K). */
export interface LoadDiffMessage {
  readonly type: 'loadDiff';
  readonly nameA: string;
  readonly nameB: string;
  readonly bytesA: Uint8Array | string;
  readonly bytesB: Uint8Array | string;
  readonly alignLast: number | null;
  readonly settings: GraphSettings;
}

export type HostToWebview = LoadMessage | LoadErrorMessage | DaemonLinkMessage | QueryResultMessage | LoadDiffMessage;

export interface ReadyMessage {
  readonly type: 'ready';
}

export interface SettingsChangedMessage {
  readonly type: 'settingsChanged';
  readonly settings: GraphSettings;
}

export interface WebviewErrorMessage {
  readonly type: 'error';
  readonly message: string;
}

export interface QueryMessage<M extends DaemonQueryMethod = DaemonQueryMethod> {
  readonly type: 'query';
  /** Chosen by the webview; echoed in the answer. */
  readonly id: number;
  readonly method: M;
  readonly params: DaemonQueries[M]['params'];
}

/** The route of a `load` is drawn: `ms` from the message's arrival to the first frame. */
export interface PaintedMessage {
  readonly type: 'painted';
  readonly ms: number;
  readonly edges: number;
}

/** The shown route as a file: `svg` is the SVG text, `png` the image's bytes in base64. */
export interface ExportMessage {
  readonly type: 'export';
  readonly format: 'svg' | 'png';
  readonly data: string;
  /** A file name to propose (no folder), from the trace's name and the output token. */
  readonly name: string;
}

export type WebviewToHost = ReadyMessage | SettingsChangedMessage | WebviewErrorMessage | QueryMessage | PaintedMessage | ExportMessage;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function isGraphSettings(value: unknown): value is GraphSettings {
  return (
    isRecord(value) &&
    typeof value['threshold'] === 'number' &&
    Number.isFinite(value['threshold']) &&
    (value['mode'] === 'renormalize' || value['mode'] === 'raw')
  );
}

export function isHostToWebview(value: unknown): value is HostToWebview {
  if (!isRecord(value)) return false;
  switch (value['type']) {
    case 'load':
      return typeof value['name'] === 'string' && (typeof value['bytes'] === 'string' || value['bytes'] instanceof Uint8Array) && isGraphSettings(value['settings']);
    case 'loadError':
      return typeof value['name'] === 'string' && typeof value['message'] === 'string';
    case 'loadDiff': {
      const bytes = (b: unknown) => typeof b === 'string' || b instanceof Uint8Array;
      const last = value['alignLast'];
      return (
        typeof value['nameA'] === 'string' && typeof value['nameB'] === 'string' && bytes(value['bytesA']) && bytes(value['bytesB']) &&
        (last === null || (Number.isInteger(last) && (last as number) > 0)) && isGraphSettings(value['settings'])
      );
    }
    case 'daemon':
      return typeof value['live'] === 'boolean' && typeof value['reason'] === 'string';
    case 'queryResult': {
      const error = value['error'];
      return (
        Number.isInteger(value['id']) &&
        (error === undefined || (isRecord(error) && typeof error['message'] === 'string' && typeof error['needsModel'] === 'boolean'))
      );
    }
    default:
      return false;
  }
}

export function isWebviewToHost(value: unknown): value is WebviewToHost {
  if (!isRecord(value)) return false;
  switch (value['type']) {
    case 'ready':
      return true;
    case 'settingsChanged':
      return isGraphSettings(value['settings']);
    case 'error':
      return typeof value['message'] === 'string';
    case 'painted':
      return typeof value['ms'] === 'number' && Number.isFinite(value['ms']) && Number.isInteger(value['edges']);
    case 'export':
      return (value['format'] === 'svg' || value['format'] === 'png') && typeof value['data'] === 'string' && typeof value['name'] === 'string';
    case 'query':
      return Number.isInteger(value['id']) && DAEMON_QUERY_METHODS.includes(value['method'] as DaemonQueryMethod) && isRecord(value['params']) && !('handle' in value['params']) && !('workDoneToken' in value['params']);
    default:
      return false;
  }
}

// --- base64 without Buffer or atob (works in Node and the browser alike) -------------------------
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const LOOKUP = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) LOOKUP[ALPHABET.charCodeAt(i)] = i;

export function encodeBase64(bytes: Uint8Array): string {
  const parts: string[] = [];
  let chunk = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i]!, b = bytes[i + 1], c = bytes[i + 2];
    const n = (a << 16) | ((b ?? 0) << 8) | (c ?? 0);
    chunk +=
      ALPHABET[(n >> 18) & 63]! +
      ALPHABET[(n >> 12) & 63]! +
      (b === undefined ? '=' : ALPHABET[(n >> 6) & 63]!) +
      (c === undefined ? '=' : ALPHABET[n & 63]!);
    if (chunk.length >= 8192) {
      parts.push(chunk);
      chunk = '';
    }
  }
  parts.push(chunk);
  return parts.join('');
}

/** Decode base64 (standard alphabet, padding optional); throws on any other character. */
export function decodeBase64(text: string): Uint8Array {
  const clean = text.replace(/=+$/, '');
  if (clean.length % 4 === 1) throw new Error('invalid base64 length');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let o = 0;
  for (let i = 0; i < clean.length; i += 4) {
    let n = 0;
    let count = 0;
    for (let j = 0; j < 4; j++) {
      const code = clean.charCodeAt(i + j);
      if (i + j >= clean.length) {
        n <<= 6;
        continue;
      }
      const v = code < 128 ? LOOKUP[code]! : -1;
      if (v < 0) throw new Error(`invalid base64 character at ${i + j}`);
      n = (n << 6) | v;
      count++;
    }
    out[o++] = (n >> 16) & 255;
    if (count > 2) out[o++] = (n >> 8) & 255;
    if (count > 3) out[o++] = n & 255;
  }
  return out.subarray(0, o);
}
