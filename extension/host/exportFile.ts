/**
 * Checking what the graph webview asks the host to save when the user exports the shown route,
 * before anything reaches the disk: an SVG document (text) or a PNG image (base64, or a
 * `data:image/png;base64,` URL), and the file name it proposes. Pure (no `vscode`): the trace
 * editor shows the save dialog and writes the bytes this returns.
 *
 * The webview runs the trace's untrusted strings through the DOM, so its output is checked as
 * strictly as any input: a bounded size, the right kind of document, a plain file name.
 */

import {decodeBase64} from '../shared/webviewMessages';

export type ExportFormat = 'svg' | 'png';

/** The largest export accepted (bytes of the file written). */
export const MAX_EXPORT_BYTES = 50 * 1024 * 1024;

/** The 8 bytes every PNG file starts with. */
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] as const;
const PNG_DATA_URL = 'data:image/png;base64,';

/** An export the host refuses to save; the message says why, for the user. */
export class ExportError extends Error {}

function megabytes(n: number): string {
  return `${(n / 1024 / 1024).toFixed(0)} MB`;
}

/** The SVG text as UTF-8 bytes: it must be an SVG document (`<svg` or `<?xml … <svg`). */
function svgBytes(data: string): Uint8Array {
  // UTF-8 takes at most 3 bytes per UTF-16 unit: refuse early what cannot fit, then measure.
  if (data.length > MAX_EXPORT_BYTES) throw new ExportError(`the SVG is larger than ${megabytes(MAX_EXPORT_BYTES)}`);
  const text = data.replace(/^\uFEFF/, '');
  const isSvg = /^<svg[\s/>]/.test(text) || (text.startsWith('<?xml') && /<svg[\s/>]/.test(text.slice(0, 4096)));
  if (!isSvg) throw new ExportError('the graph sent something that is not an SVG document');
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > MAX_EXPORT_BYTES) throw new ExportError(`the SVG is larger than ${megabytes(MAX_EXPORT_BYTES)}`);
  return bytes;
}

/** The PNG's bytes from base64 or a PNG data URL; they must start with PNG's signature. */
function pngBytes(data: string): Uint8Array {
  let base64 = data;
  if (data.startsWith('data:')) {
    if (!data.startsWith(PNG_DATA_URL)) throw new ExportError('the graph sent a data URL that is not a base64 PNG');
    base64 = data.slice(PNG_DATA_URL.length);
  }
  if (base64.length > Math.ceil(MAX_EXPORT_BYTES / 3) * 4) throw new ExportError(`the PNG is larger than ${megabytes(MAX_EXPORT_BYTES)}`);
  let bytes: Uint8Array;
  try {
    bytes = decodeBase64(base64);
  } catch (error) {
    throw new ExportError(`the graph sent a PNG that is not valid base64 (${error instanceof Error ? error.message : String(error)})`);
  }
  if (bytes.length < PNG_SIGNATURE.length || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) {
    throw new ExportError('the graph sent something that is not a PNG image');
  }
  return bytes;
}

/** The bytes to write for an export of `format` with `data` as the webview sent it; throws
 * ExportError when they are not what the format says or are too large. */
export function exportBytes(format: ExportFormat, data: string): Uint8Array {
  return format === 'svg' ? svgBytes(data) : pngBytes(data);
}

/**
 * The file name the save dialog proposes: the webview's `proposed` name when it is a plain file
 * name (letters, digits, `.`, `_`, `-`; no folder; at most 120 characters) ending in `.<format>`,
 * else the trace's name with the format's extension (`ioi.lmtrace` -> `ioi.svg`).
 */
export function exportFileName(proposed: string, traceName: string, format: ExportFormat): string {
  const extension = `.${format}`;
  const plain = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,119}$/.test(proposed) && !proposed.includes('..');
  if (plain && proposed.toLowerCase().endsWith(extension) && proposed.length > extension.length) return proposed;
  const stem = traceName.replace(/\.lmtrace$/i, '').replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[.-]+/, '').slice(0, 100);
  return `${stem || 'trace'}${extension}`;
}
