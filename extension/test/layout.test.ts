// The flow graph's layout: a route mapped to SVG coordinates (pure, no DOM).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {RouteResult} from '../shared/protocol/types';
import {nodeKey} from '../shared/graph/routes';
import {readTraceFile} from '../shared/traces/lmtrace';
import {TraceQueries} from '../shared/traces/trace';
import {layoutRoute, MARGIN, MIN_COLUMN, nodeLevel, nodeRadius, strokeWidth, type LayoutOptions} from '../webview/layout';
import {encodeWire, syntheticWire} from './helpers';

/** The side column of a 1280-wide editor, as the graph opens beside a prompt. */
const SIDE: LayoutOptions = {width: 540, height: 800, collapse: true};

function routeOf(threshold = 0.01, parallel = false): {route: RouteResult; q: TraceQueries} {
  const q = new TraceQueries(readTraceFile(encodeWire(syntheticWire({parallel}))));
  return {route: q.route(-1, threshold), q};
}

test('every route node and edge gets a place, edges joining their nodes', () => {
  const {route, q} = routeOf();
  const layout = layoutRoute(route, q.nTokens, q.nLayers, SIDE);
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
  const layout = layoutRoute(route, q.nTokens, q.nLayers, SIDE);
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
  const layout = layoutRoute(route, q.nTokens, q.nLayers, SIDE);
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
  const layout = layoutRoute(route, q.nTokens, q.nLayers, SIDE);
  for (const n of layout.nodes.filter((n) => n.id.kind === 'ffn')) assert.ok(n.x > layout.columns[n.id.position]!.x);
  assert.deepEqual(new Set(layout.edges.map((e) => e.kind)), new Set(route.edges.map((e) => e.kind)));
});

test('a higher threshold gives fewer edges; the layout follows', () => {
  const low = routeOf(0.01), high = routeOf(0.3);
  assert.ok(high.route.edges.length < low.route.edges.length);
  assert.equal(layoutRoute(high.route, high.q.nTokens, high.q.nLayers, SIDE).edges.length, high.route.edges.length);
});

test('parallel-block traces lay out without post-attention nodes', () => {
  const {route, q} = routeOf(0.01, true);
  const layout = layoutRoute(route, q.nTokens, q.nLayers, SIDE);
  assert.ok(layout.nodes.every((n) => n.id.kind !== 'post_attention'));
  assert.equal(layout.edges.length, route.edges.length);
});

/** A route of the output token of an n-token, L-layer prompt that reaches `columns` (positions,
 * the output's included) through an attention edge into `layer` each, and an FFN node there. */
function wideRoute(n: number, L: number, columns: number[], layer = L - 1): RouteResult {
  const t = n - 1;
  const nodes: RouteResult['nodes'] = [{id: {kind: 'residual', layer: L - 1, position: t}, share: 1}, {id: {kind: 'post_attention', layer, position: t}, share: 0.6}, {id: {kind: 'ffn', layer, position: t}, share: 0.37}];
  const edges: RouteResult['edges'] = [
    {kind: 'ffn', source: {kind: 'post_attention', layer, position: t}, target: {kind: 'ffn', layer, position: t}, weight: 1, heads: []},
  ];
  for (const j of columns) {
    if (j === t) continue;
    nodes.push({id: {kind: 'residual', layer: layer - 1, position: j}, share: 0.5 / columns.length});
    edges.push({kind: 'attention', source: {kind: 'residual', layer: layer - 1, position: j}, target: {kind: 'post_attention', layer, position: t}, weight: 0.5 / columns.length, heads: [0.5 / columns.length]});
  }
  return {token: t, threshold: 0.04, mode: 'renormalize', nodes, edges};
}

test('columns with no route node collapse; the route of a 200-token, 30-layer prompt fits the side column at zoom 1', () => {
  const route = wideRoute(200, 30, [3, 50, 199]);
  const layout = layoutRoute(route, 200, 30, SIDE);
  assert.equal(layout.columns.filter((c) => !c.collapsed).length, 3);
  assert.equal(layout.scale, 1);
  assert.equal(layout.width, SIDE.width);
  assert.equal(layout.height, SIDE.height);
  for (const n of layout.nodes) assert.ok(n.x - n.r >= 0 && n.x + n.r <= SIDE.width && n.y - n.r >= MARGIN.top - 2 && n.y + n.r <= SIDE.height, n.key);
  const full = layoutRoute(route, 200, 30, {...SIDE, collapse: false});
  assert.equal(full.columns.filter((c) => c.collapsed).length, 0);
  assert.equal(full.rows.length, 31);
});

test('a route whose columns cannot be legible in the canvas is laid out wider, and fits at a zoom that still fills the canvas', () => {
  const columns = Array.from({length: 80}, (_, i) => i * 12);
  const layout = layoutRoute(wideRoute(1000, 30, [...columns, 999]), 1000, 30, SIDE);
  const used = layout.columns.filter((c) => !c.collapsed);
  assert.equal(used.length, 81);
  assert.ok(used.every((c) => c.width >= MIN_COLUMN), 'route columns keep their legible width');
  assert.ok(layout.scale < 1, `scale ${layout.scale}`);
  // Zoomed by `scale`, the layout is exactly the canvas: wider than tall is not left blank.
  assert.ok(Math.abs(layout.width * layout.scale - SIDE.width) < 1, `width ${layout.width * layout.scale}`);
  assert.ok(Math.abs(layout.height * layout.scale - SIDE.height) < 1, `height ${layout.height * layout.scale}`);
  const strips = layout.columns.filter((c) => c.collapsed).reduce((sum, c) => sum + c.width, 0);
  assert.ok(strips * layout.scale <= SIDE.width / 4 + 1, 'collapsed tokens take at most a quarter of the width');
});

test('quiet layers (no attention edge, no FFN node) are shorter than busy ones', () => {
  const layout = layoutRoute(wideRoute(20, 30, [2, 19], 20), 20, 30, SIDE);
  const gap = (layer: number) => layout.rows[layer]!.y - layout.rows[layer + 1]!.y; // rows[0] is X
  assert.ok(layout.rows[21]!.quiet === false && layout.rows[5]!.quiet === true);
  assert.ok(gap(20) > 3 * gap(5), `busy ${gap(20)} vs quiet ${gap(5)}`);
});

test('node size and edge width follow the share of the prediction, FFN nodes and edges included', () => {
  const route = wideRoute(20, 30, [2, 19], 20);
  const layout = layoutRoute(route, 20, 30, SIDE);
  const node = (key: string) => layout.nodes.find((n) => n.key === key)!;
  assert.ok(node('M20.19').r > node('R19.2').r, 'the FFN node carrying 37% is bigger than a 25% residual node');
  assert.equal(node('M20.19').r, nodeRadius(0.37, layout.maxRadius));
  const ffn = layout.edges.find((e) => e.kind === 'ffn')!;
  assert.equal(ffn.flow, 0.37, 'the FFN node’s one input carries its whole share');
  const attention = layout.edges.find((e) => e.kind === 'attention')!;
  assert.equal(attention.flow, 0.6 * attention.edge.weight, 'an edge carries its target’s share times its weight');
  assert.ok(nodeRadius(1, 10) > nodeRadius(0.1, 10) && nodeRadius(0.1, 10) > nodeRadius(0, 10));
});

test('stroke width grows with the flow, bounded', () => {
  assert.ok(strokeWidth(0.1) < strokeWidth(0.5));
  assert.equal(strokeWidth(5), strokeWidth(1));
  assert.equal(strokeWidth(-0.5), strokeWidth(0.5));
  assert.equal(strokeWidth(NaN), 0.8);
});

