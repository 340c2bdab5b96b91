// Routes from a saved trace (shared/graph/routes.ts): the method's thresholding rules and the
// route invariants of docs/method.md, on the synthetic trace (the cross-check with Python is
// golden.test.ts; NumPy's summation orders, sums.test.ts).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import type {NodeId, NodeKind, RouteEdge, ThresholdMode} from '../shared/protocol/types';
import {readTraceFile} from '../shared/traces/lmtrace';
import {ContributionGraph, nodeKey, routeResult, ThresholdError} from '../shared/graph/routes';
import {encodeWire, f32, i32, syntheticWire} from './helpers';

const MODES: ThresholdMode[] = ['renormalize', 'raw'];
const THRESHOLDS = [0.01, 0.02, 0.04, 0.06, 0.1, 0.3];

function graphOf(wire = syntheticWire()): ContributionGraph {
  return new ContributionGraph(readTraceFile(encodeWire(wire)));
}

const edgeId = (e: RouteEdge) => `${e.kind}:${nodeKey(e.source)}->${nodeKey(e.target)}`;

/** Every node of the graph, embeddings first (the product only ever walks one route). */
function allNodes(graph: ContributionGraph): NodeId[] {
  const nodes: NodeId[] = [];
  for (let i = 0; i < graph.nTokens; i++) nodes.push({kind: 'embedding', layer: 0, position: i});
  const kinds: NodeKind[] = graph.parallelBlocks ? ['ffn', 'residual'] : ['post_attention', 'ffn', 'residual'];
  for (let layer = 0; layer < graph.nLayers; layer++) {
    for (let i = 0; i < graph.nTokens; i++) for (const kind of kinds) nodes.push({kind, layer, position: i});
  }
  return nodes;
}

/** Every kept edge of the whole graph at τ, not only one route's: the reachability oracle. */
function fullGraphEdges(graph: ContributionGraph, threshold: number, mode: ThresholdMode): RouteEdge[] {
  return allNodes(graph).flatMap(node => graph.incoming(node, threshold, mode));
}

test('renormalising at τ = 0.1 follows docs/method.md test vector 5', () => {
  // Two targets of one attention step, one source, two heads: heads [0.05, 0.15] and
  // [0.05, 0.05], residual parts 0.8 and 0.9.
  const wire = syntheticWire();
  Object.assign(wire.model, {nLayers: 1, nHeads: 2});
  wire.tokens = {prompt: 'a', ids: i32([2], [0, 4]), strings: ['<bos>', 'a']};
  wire.predictions = {ids: i32([2, 2], [4, 5, 5, 6]), probs: f32([2, 2], [0.6, 0.3, 0.5, 0.2])};
  wire.blocks = {residualAttention: f32([1, 2], [0.8, 0.9]), ffn: f32([1, 2], [0.5, 0.5]), residualFfn: f32([1, 2], [0.5, 0.5])};
  wire.edges = {
    layer: i32([2], [0, 0]), target: i32([2], [0, 1]), source: i32([2], [0, 0]),
    headContributions: f32([2, 2], [0.05, 0.15, 0.05, 0.05]), headAttention: f32([2, 2], [1, 1, 0.5, 0.5]),
  };
  wire.neurons = {layer: i32([0], []), position: i32([0], []), index: i32([0, 2], []), contribution: f32([0, 2], []), activation: f32([0, 2], []), restContribution: f32([0], [])};
  wire.projections = {kind: [], nodeKind: [], layer: i32([0], []), position: i32([0], []), topIds: i32([0, 2], []), topLogits: f32([0, 2], []), bottomIds: i32([0, 2], []), bottomLogits: f32([0, 2], []), topPrevRank: i32([0, 2], [])};
  const graph = graphOf(wire);
  const first = graph.incoming({kind: 'post_attention', layer: 0, position: 0}, 0.1, 'renormalize');
  assert.deepEqual(first.map(e => e.kind), ['residual', 'attention']);
  assert.ok(Math.abs(first[0]!.weight - 0.8421053) < 1e-6);
  assert.ok(Math.abs(first[1]!.weight - 0.1578947) < 1e-6);
  assert.deepEqual(first[1]!.heads.map(h => Math.round(h * 1e7) / 1e7), [0, 0.1578947]);
  const second = graph.incoming({kind: 'post_attention', layer: 0, position: 1}, 0.1, 'renormalize');
  assert.deepEqual(second.map(e => [e.kind, e.weight]), [['residual', 1]]);
  // Raw mode sums heads first: 0.2 > 0.1 survives with its unthresholded heads; 0.1 does not.
  const raw = graph.incoming({kind: 'post_attention', layer: 0, position: 0}, 0.1, 'raw');
  assert.deepEqual(raw.map(e => e.kind), ['residual', 'attention']);
  assert.equal(raw[1]!.weight, Math.fround(Math.fround(0.05) + Math.fround(0.15)));
  assert.equal(graph.incoming({kind: 'post_attention', layer: 0, position: 1}, 0.1, 'raw').length, 1);
});

test('renormalised weights entering a node sum to 1', () => {
  for (const parallel of [false, true]) {
    const graph = graphOf(syntheticWire({parallel}));
    for (const node of allNodes(graph)) {
      if (node.kind === 'embedding' || node.kind === 'ffn') continue; // M(l,i): one edge carrying c_ffn
      const edges = graph.incoming(node, 0.04, 'renormalize');
      if (edges.length === 0) continue;
      const sum = edges.reduce((s, e) => s + e.weight, 0);
      assert.ok(Math.abs(sum - 1) < 1e-12, `${nodeKey(node)}: ${sum}`);
    }
  }
});

test('the lazy route equals reachability in the full graph, and shrinks as τ grows', () => {
  for (const parallel of [false, true]) {
    const graph = graphOf(syntheticWire({parallel}));
    for (const mode of MODES) {
      for (let token = 0; token < graph.nTokens; token++) {
        let previous: Set<string> | null = null;
        for (const tau of THRESHOLDS) {
          const route = graph.route(token, tau, mode);
          // Reachability by brute force over every kept edge of the whole graph.
          const all = fullGraphEdges(graph, tau, mode);
          const reached = new Set([nodeKey(graph.outputNode(token))]);
          const kept = new Set<string>();
          for (let grew = true; grew; ) {
            grew = false;
            for (const e of all) {
              if (reached.has(nodeKey(e.target)) && !kept.has(edgeId(e))) {
                kept.add(edgeId(e));
                reached.add(nodeKey(e.source));
                grew = true;
              }
            }
          }
          const ids = new Set(route.edges.map(edgeId));
          assert.deepEqual(ids, kept, `${parallel ? 'parallel' : 'sequential'} ${mode} t=${token} τ=${tau}`);
          assert.equal(ids.size, route.edges.length, 'no edge twice');
          if (previous !== null) for (const id of ids) assert.ok(previous.has(id), `route grew at τ=${tau}: ${id}`);
          previous = ids;
        }
      }
    }
  }
});

test('the share (flow) is 1 at the output node and positive on every node of the route', () => {
  const graph = graphOf();
  const result = routeResult(graph.route(-1, 0.01, 'renormalize'));
  assert.equal(result.token, 2);
  const share = new Map(result.nodes.map(n => [nodeKey(n.id), n.share]));
  assert.equal(share.get('residual/1/2'), 1);
  for (const [key, value] of share) assert.ok(value > 0 && value <= 1 + 1e-12, `${key}: ${value}`);
  // Every node an edge touches, and no other.
  const touched = new Set(['residual/1/2', ...result.edges.flatMap(e => [nodeKey(e.source), nodeKey(e.target)])]);
  assert.deepEqual(new Set(share.keys()), touched);
  // Python's Node order: kind (as a string), then layer, then position.
  const order = result.nodes.map(n => [n.id.kind, n.id.layer, n.id.position] as const);
  const sorted = [...order].sort((a, b) => (a[0] !== b[0] ? (a[0] < b[0] ? -1 : 1) : a[1] - b[1] || a[2] - b[2]));
  assert.deepEqual(order, sorted);
});

test('thresholds below minThreshold, non-numbers, bad modes and tokens are refused', () => {
  const graph = graphOf();
  assert.throws(() => graph.route(-1, 0.005), (e: unknown) => e instanceof ThresholdError &&
    e.message === 'threshold 0.005 is below 0.01, the smallest this trace answers (trace again with a lower min_threshold)');
  assert.throws(() => graph.route(-1, 1e-5), /threshold 1e-05 is below 0\.01/);
  assert.doesNotThrow(() => graph.route(-1, 0.01 - 1e-13)); // within Python's 1e-12 slack
  assert.throws(() => graph.route(-1, NaN), ThresholdError);
  assert.throws(() => graph.route(3, 0.04), /token position 3 is out of range: the trace has 3 tokens/);
  assert.throws(() => graph.route(-1, 0.04, 'sideways' as ThresholdMode), /unknown threshold mode 'sideways'/);
});
