// The flow graph's layout: a route mapped to SVG coordinates (pure, no DOM).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {RouteResult} from '../shared/protocol/types';
import {nodeKey} from '../shared/graph/routes';
import {readTraceFile} from '../shared/traces/lmtrace';
import {TraceQueries} from '../shared/traces/trace';
import {clip, DEFAULT_LAYOUT, displayToken, layoutRoute, nodeLevel, strokeWidth} from '../webview/layout';
import {encodeWire, syntheticWire} from './helpers';

function routeOf(threshold = 0.01, parallel = false): {route: RouteResult; q: TraceQueries} {
  const q = new TraceQueries(readTraceFile(encodeWire(syntheticWire({parallel}))));
  return {route: q.route(-1, threshold), q};
}

test('every route node and edge gets a place, edges joining their nodes', () => {
  const {route, q} = routeOf();
  const layout = layoutRoute(route, q.nTokens, q.nLayers);
  assert.equal(layout.nodes.length, route.nodes.length);
  assert.equal(layout.edges.length, route.edges.length);
  const at = new Map(layout.nodes.map((n) => [nodeKey(n.id), n]));
  for (const e of layout.edges) {
    const source = at.get(nodeKey(e.edge.source))!;
    const target = at.get(nodeKey(e.edge.target))!;
    assert.deepEqual([e.x1, e.y1, e.x2, e.y2], [source.x, source.y, target.x, target.y]);
    assert.ok(e.y2 < e.y1, 'edges go up the stack');
    assert.match(e.d, /^M[\d.]+,[\d.]+ /);
  }
  for (const n of layout.nodes) {
    assert.ok(n.x > 0 && n.x < layout.width && n.y > 0 && n.y < layout.height, nodeKey(n.id));
  }
});

test('the output node is on top, in the output token column, the embeddings at the bottom', () => {
  const {route, q} = routeOf();
  const layout = layoutRoute(route, q.nTokens, q.nLayers);
  const output = layout.nodes.filter((n) => n.isOutput);
  assert.equal(output.length, 1);
  assert.equal(output[0]!.y, Math.min(...layout.nodes.map((n) => n.y)));
  assert.equal(output[0]!.x, layout.columns[q.nTokens - 1]!.x);
  const bottom = Math.max(...layout.nodes.map((n) => n.y));
  for (const n of layout.nodes.filter((n) => n.id.kind === 'embedding')) assert.equal(n.y, bottom);
});

test('node levels: embeddings, then A, M, R of each layer', () => {
  const at = (kind: 'embedding' | 'post_attention' | 'ffn' | 'residual', layer: number) => nodeLevel({kind, layer, position: 0});
  assert.deepEqual([at('embedding', 0), at('post_attention', 0), at('ffn', 0), at('residual', 0), at('post_attention', 1)], [0, 1, 1.5, 2, 3]);
});

test('the self-attention edge is drawn apart from the residual edge of the same column', () => {
  const {route, q} = routeOf();
  const layout = layoutRoute(route, q.nTokens, q.nLayers);
  const self = layout.edges.filter((e) => e.selfAttention);
  assert.ok(self.length > 0, 'the synthetic route has self-attention edges');
  for (const e of self) {
    const residual = layout.edges.find((r) => r.kind === 'residual' && r.edge.target.layer === e.edge.target.layer && r.edge.target.position === e.edge.target.position && r.edge.target.kind === e.edge.target.kind);
    assert.notEqual(e.d, residual?.d);
    assert.match(e.d, / C/, 'a curve, not the straight residual line');
  }
});

test('FFN nodes sit to the right of their column; other edges keep their kind', () => {
  const {route, q} = routeOf();
  const layout = layoutRoute(route, q.nTokens, q.nLayers);
  for (const n of layout.nodes.filter((n) => n.id.kind === 'ffn')) assert.ok(n.x > layout.columns[n.id.position]!.x);
  assert.deepEqual(new Set(layout.edges.map((e) => e.kind)), new Set(route.edges.map((e) => e.kind)));
});

test('a higher threshold gives fewer edges; the layout follows', () => {
  const low = routeOf(0.01), high = routeOf(0.3);
  assert.ok(high.route.edges.length < low.route.edges.length);
  assert.equal(layoutRoute(high.route, high.q.nTokens, high.q.nLayers).edges.length, high.route.edges.length);
});

test('parallel-block traces lay out without post-attention nodes', () => {
  const {route, q} = routeOf(0.01, true);
  const layout = layoutRoute(route, q.nTokens, q.nLayers);
  assert.ok(layout.nodes.every((n) => n.id.kind !== 'post_attention'));
  assert.equal(layout.edges.length, route.edges.length);
});

test('columns with no route node collapse; 200 tokens x 30 layers stay bounded', () => {
  const route: RouteResult = {
    token: 199, threshold: 0.04, mode: 'renormalize',
    nodes: [{id: {kind: 'residual', layer: 29, position: 199}, share: 1}, {id: {kind: 'post_attention', layer: 29, position: 199}, share: 1}, {id: {kind: 'residual', layer: 28, position: 3}, share: 0.2}],
    edges: [{kind: 'residual', source: {kind: 'post_attention', layer: 29, position: 199}, target: {kind: 'residual', layer: 29, position: 199}, weight: 1, heads: []}],
  };
  const layout = layoutRoute(route, 200, 30);
  assert.equal(layout.columns.filter((c) => !c.collapsed).length, 2);
  assert.ok(layout.width < 200 * DEFAULT_LAYOUT.columnWidth / 3, `width ${layout.width}`);
  const full = layoutRoute(route, 200, 30, {...DEFAULT_LAYOUT, collapse: false});
  assert.equal(full.columns.filter((c) => c.collapsed).length, 0);
  assert.equal(full.rows.length, 31);
});

test('stroke width grows with |weight|, bounded', () => {
  assert.ok(strokeWidth(0.1) < strokeWidth(0.5));
  assert.equal(strokeWidth(5), strokeWidth(1));
  assert.equal(strokeWidth(-0.5), strokeWidth(0.5));
  assert.equal(strokeWidth(NaN), 0.75);
});

test('tokens show spaces and newlines, and stay plain text', () => {
  assert.equal(displayToken(' the'), '·the');
  assert.equal(displayToken('a\nb\tc'), 'a⏎b→c');
  assert.equal(displayToken('\u0001'), '\\x01');
  assert.equal(displayToken(''), '∅');
  assert.equal(displayToken('\u00a0x\u200b'), '\\u00a0x\\u200b');
  assert.equal(displayToken('<img src=x onerror=alert(1)>'), '<img·src=x·onerror=alert(1)>');
  assert.equal(clip('abcdefghij', 5), 'abcd…');
  assert.equal(clip('abc', 5), 'abc');
});
