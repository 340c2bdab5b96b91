/**
 * The flow-graph webview's HTML: a fixed shell with a strict CSP. Nothing from a trace is ever
 * interpolated here (data arrives by postMessage); the only inputs are the webview's CSP source,
 * the two bundle URIs and a fresh nonce, and each is checked before use. Pure (no `vscode`).
 */

import {randomBytes} from 'node:crypto';

export interface ShellInputs {
  /** `webview.cspSource`. */
  readonly cspSource: string;
  /** `asWebviewUri(dist/webview.js)` and `(dist/webview.css)`, as strings. */
  readonly scriptUri: string;
  readonly styleUri: string;
  readonly nonce: string;
}

/** A fresh nonce: 24 base64url characters from 18 random bytes. */
export function makeNonce(): string {
  return randomBytes(18).toString('base64url');
}

/** The Content-Security-Policy of the webview. */
export function contentSecurityPolicy(cspSource: string, nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src ${cspSource} 'nonce-${nonce}'`,
    `img-src ${cspSource} data:`,
    `font-src ${cspSource}`,
  ].join('; ');
}

const SAFE_ATTRIBUTE = /^[^"<>&\s]+$/;
/** Space-separated CSP sources (VS Code for the web gives `'self' https://*.vscode-cdn.net`): no
 * `;` (a new directive), no quote or bracket that could leave the attribute. */
const SAFE_CSP_SOURCE = /^[^;"<>&,\s]+(?: [^;"<>&,\s]+)*$/;

export function shellHtml(inputs: ShellInputs): string {
  const {cspSource, scriptUri, styleUri, nonce} = inputs;
  if (!/^[A-Za-z0-9_-]{16,}$/.test(nonce)) throw new Error('nonce must be 16+ base64url characters');
  if (!SAFE_CSP_SOURCE.test(cspSource)) throw new Error(`unexpected webview CSP source: ${cspSource}`);
  for (const uri of [scriptUri, styleUri]) {
    if (!SAFE_ATTRIBUTE.test(uri)) throw new Error(`unexpected webview resource URI: ${uri}`);
  }
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${contentSecurityPolicy(cspSource, nonce)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${styleUri}" nonce="${nonce}">
<title>lmscope flow graph</title>
</head>
<body>
<div id="root"></div>
<script nonce="${nonce}" src="${scriptUri}"></script>
</body>
</html>
`;
}
