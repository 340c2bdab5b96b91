// Token text from someone else's prompt or model, as the graph shows it: nothing invisible,
// nothing that reorders what follows. (That it stays text, never markup, is the webview test's:
// the webview sets it with textContent under a strict CSP.)
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {displayToken} from '../shared/display';

const HOSTILE = [
  '<img src=x onerror=alert(1)>',
  '<script>alert(1)</script>',
  '**bold** [link](javascript:alert(1))',
  '\u202eevil\u202c',
  '\u2066rtl\u2069 \u200f\u200e',
  'e\u0301\u0302 שָׁלוֹם مرحبا',
  'ctrl \u0000\u0007\u001b[31m\u007f',
  'zero\u200bwidth\ufeff\u2060\u00ad',
];

test('control, format and bidi characters are shown as escapes, never applied', () => {
  for (const text of HOSTILE) {
    const shown = displayToken(text);
    assert.ok(!Array.from(shown).some((ch) => ch.charCodeAt(0) < 0x20 || ch === '\u007f' || /\p{Cf}/u.test(ch)), JSON.stringify(text));
  }
  assert.equal(displayToken('\u202eevil\u202c'), '\\u202eevil\\u202c');
  assert.equal(displayToken('ctrl \u001b[31m'), 'ctrl·\\x1b[31m');
});

test('letters, marks and right-to-left scripts are kept as they are', () => {
  assert.equal(displayToken('e\u0301\u0302'), 'e\u0301\u0302');
  assert.equal(displayToken('שָׁלוֹם'), 'שָׁלוֹם');
  assert.equal(displayToken('<script>alert(1)</script>'), '<script>alert(1)</script>'); // text, not markup
});
