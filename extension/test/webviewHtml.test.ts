// The webview's HTML shell: strict CSP with a nonce, nothing else interpolated.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {contentSecurityPolicy, makeNonce, shellHtml} from '../host/webviewHtml';

const inputs = {
  cspSource: 'https://*.vscode-cdn.net',
  scriptUri: 'https://file%2B.vscode-resource.vscode-cdn.net/ext/dist/webview.js',
  styleUri: 'https://file%2B.vscode-resource.vscode-cdn.net/ext/dist/webview.css',
  nonce: 'abcdefghijklmnopqrstuvwx',
};

test('the CSP allows only nonce scripts and the webview source', () => {
  const csp = contentSecurityPolicy(inputs.cspSource, inputs.nonce);
  assert.match(csp, /^default-src 'none'; /);
  assert.match(csp, /script-src 'nonce-abcdefghijklmnopqrstuvwx'(;|$)/);
  assert.match(csp, /style-src https:\/\/\*\.vscode-cdn\.net 'nonce-abcdefghijklmnopqrstuvwx'/);
  assert.match(csp, /img-src https:\/\/\*\.vscode-cdn\.net data:/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*;|http:/);
});

test('the shell has one nonce script, no inline code and no data', () => {
  const html = shellHtml(inputs);
  assert.equal(html.match(/<script/g)?.length, 1);
  assert.match(html, /<script nonce="abcdefghijklmnopqrstuvwx" src="[^"]+webview\.js"><\/script>/);
  assert.doesNotMatch(html, /<script[^>]*>[^<]/);
  assert.doesNotMatch(html, /\son(load|error|click|mouseover)=/i);
});

test("VS Code for the web's CSP source ('self' plus a host) is accepted", () => {
  const html = shellHtml({...inputs, cspSource: "'self' https://*.vscode-cdn.net"});
  assert.match(html, /style-src 'self' https:\/\/\*\.vscode-cdn\.net 'nonce-/);
});

test('nonces are fresh and long', () => {
  const a = makeNonce(), b = makeNonce();
  assert.notEqual(a, b);
  assert.match(a, /^[A-Za-z0-9_-]{24}$/);
});

test('inputs that could break out of an attribute are refused', () => {
  assert.throws(() => shellHtml({...inputs, scriptUri: 'x" onload="alert(1)'}));
  assert.throws(() => shellHtml({...inputs, cspSource: "'unsafe-inline'; script-src *"}));
  assert.throws(() => shellHtml({...inputs, nonce: 'short'}));
});
