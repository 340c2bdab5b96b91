// Shared by the trace library's tests: the repository root, and a small synthetic `.lmtrace`
// built here (no Python needed) that tests can break one field at a time.
//
// The synthetic trace: L=2 layers, n=3 tokens, H=2 heads, dFfn=4, V=10 (ids 0..9), K=2 stored
// neurons, k=2 projection tokens, kPred=2 predictions; every attention edge (l, i <- j<=i) stored.
import {encode} from '@msgpack/msgpack';
import path from 'node:path';

/** extension/out/test/ -> the repository root. */
export const ROOT = path.resolve(__dirname, '..', '..', '..');

type Wire = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function bytes(values: number[], dtype: 'int32' | 'float32'): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => (dtype === 'int32' ? view.setInt32(4 * i, v, true) : view.setFloat32(4 * i, v, true)));
  return out;
}

export function i32(shape: number[], values: number[]): Wire {
  return {dtype: 'int32', shape, data: bytes(values, 'int32')};
}

export function f32(shape: number[], values: number[]): Wire {
  return {dtype: 'float32', shape, data: bytes(values, 'float32')};
}

/** A valid trace document (msgpack-ready: arrays as little-endian bins). */
export function syntheticWire(options: {parallel?: boolean} = {}): Wire {
  const parallel = options.parallel ?? false;
  const L = 2, n = 3, H = 2;
  const edges = {layer: [] as number[], target: [] as number[], source: [] as number[], heads: [] as number[], attention: [] as number[]};
  for (let l = 0; l < L; l++) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j <= i; j++) {
        edges.layer.push(l);
        edges.target.push(i);
        edges.source.push(j);
        // Varied but deterministic shares: some heads above 0.04, some below.
        edges.heads.push(0.03 + 0.05 * ((l + i + j) % 3), 0.02 + 0.04 * ((l * 2 + j) % 2));
        edges.attention.push(1 / (i + 1), 1 / (i + 1));
      }
    }
  }
  const E = edges.layer.length;
  return {
    magic: 'lmscope-trace',
    formatVersion: 1,
    model: {
      spec: 'synthetic', name: 'synthetic', source: 'folder', contentHash: 'sha256:0', family: parallel ? 'gpt_neox' : 'llama',
      modelType: parallel ? 'gpt_neox' : 'llama', nLayers: L, nHeads: H, nKvHeads: 1, dModel: 8, dHead: 4, dFfn: 4,
      vocabSize: 10, contextLength: 64, parallelBlocks: parallel,
    },
    settings: {bosPrepended: true, minThreshold: 0.01, topNeurons: 2, projectionTopK: 2, predictionTopK: 2},
    environment: {
      lmscopeVersion: '0.1.0', torchVersion: '2', transformersVersion: '4', pythonVersion: '3.11', dtype: 'float32',
      device: 'cpu', created: '2025-01-01T00:00:00Z',
    },
    tokens: {prompt: 'a b', ids: i32([n], [0, 4, 5]), strings: ['<bos>', 'a', 'b']},
    predictions: {ids: i32([n, 2], [4, 5, 5, 6, 7, 8]), probs: f32([n, 2], [0.6, 0.3, 0.5, 0.2, 0.9, 0.05])},
    blocks: {
      // Parallel blocks: one step holds the residual, the FFN and the heads, which sum to <= 1.
      residualAttention: f32([L, n], parallel ? [0.5, 0.3, 0.3, 0.3, 0.03, 0.4] : [0.7, 0.5, 0.3, 0.6, 0.03, 0.4]),
      ffn: f32([L, n], [0.2, 0.3, 0.05, 0.5, 0.6, 0.01]),
      residualFfn: parallel ? null : f32([L, n], [0.8, 0.7, 0.95, 0.5, 0.4, 0.99]),
    },
    edges: {
      layer: i32([E], edges.layer), target: i32([E], edges.target), source: i32([E], edges.source),
      headContributions: f32([E, H], edges.heads), headAttention: f32([E, H], edges.attention),
    },
    neurons: {
      layer: i32([1], [0]), position: i32([1], [2]), index: i32([1, 2], [3, 1]),
      contribution: f32([1, 2], [0.5, 0.2]), activation: f32([1, 2], [1.5, -0.25]), restContribution: f32([1], [0.3]),
    },
    projections: {
      kind: ['lens', 'ffn_update'], nodeKind: ['residual', 'ffn'], layer: i32([2], [1, 0]), position: i32([2], [2, 2]),
      topIds: i32([2, 2], [7, 8, 1, 2]), topLogits: f32([2, 2], [9.5, 8.25, 3, 2]),
      bottomIds: i32([2, 2], [9, 3, 0, 6]), bottomLogits: f32([2, 2], [-4, -3, -1, -0.5]),
      topPrevRank: i32([2, 2], [0, 3, -1, -1]),
    },
    vocabulary: {ids: i32([10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), strings: ['<bos>', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']},
    extra: {},
  };
}

export function encodeWire(wire: Wire): Uint8Array {
  return encode(wire);
}

/** A deterministic PRNG (mulberry32), for reproducible fuzzing. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A large trace of the shape a long prompt gives (n tokens, L layers, H heads), built here from a
 * seed: every target stores its self edge, the first token (an attention sink), its previous
 * token and a few random earlier tokens; the previous token and one far token are strong for a
 * fraction of targets, as induction and copying heads make them. At τ 0.04 its routes reach a
 * few dozen columns and hundreds to a few thousand edges: what the webview must draw quickly.
 */
export function longWire(n = 1000, L = 30, H = 9, seed = 1): Wire {
  const random = seededRandom(seed);
  const edges = {layer: [] as number[], target: [] as number[], source: [] as number[], heads: [] as number[], attention: [] as number[]};
  const residualAttention: number[] = [], ffn: number[] = [], residualFfn: number[] = [];
  const split = (total: number): number[] => {
    const w = Array.from({length: H}, () => random() ** 3);
    const sum = w.reduce((a, b) => a + b, 0) || 1;
    return w.map((v) => (v / sum) * total);
  };
  for (let l = 0; l < L; l++) {
    for (let i = 0; i < n; i++) {
      const parts = new Map<number, number>();
      const add = (j: number, share: number) => parts.set(j, (parts.get(j) ?? 0) + share);
      add(0, 0.08 + 0.06 * random());
      add(i, 0.03 + 0.04 * random());
      if (i > 0) add(i - 1, random() < 0.25 ? 0.1 + 0.1 * random() : 0.01 * random());
      for (let k = 0; k < 3 && i > 1; k++) add(Math.floor(random() * i), random() < 0.04 ? 0.08 + 0.1 * random() : 0.015 * random());
      const sources = [...parts.keys()].sort((a, b) => a - b);
      let moved = 0;
      for (const j of sources) {
        const share = parts.get(j)!;
        moved += share;
        edges.layer.push(l);
        edges.target.push(i);
        edges.source.push(j);
        edges.heads.push(...split(share));
        edges.attention.push(...Array.from({length: H}, () => random() / Math.max(1, i)));
      }
      residualAttention.push(Math.max(0, 0.98 - moved));
      const f = 0.05 + 0.3 * random() ** 2;
      ffn.push(f);
      residualFfn.push(0.98 - f);
    }
  }
  const E = edges.layer.length;
  const vocab = 50;
  const base = syntheticWire();
  return {
    ...base,
    model: {...base['model'], nLayers: L, nHeads: H, nKvHeads: 3, dModel: 576, dHead: 64, dFfn: 1536, vocabSize: vocab, contextLength: 8192},
    tokens: {prompt: 'long', ids: i32([n], Array.from({length: n}, (_, i) => i % vocab)), strings: Array.from({length: n}, (_, i) => (i === 0 ? '<bos>' : ` w${i % vocab}`))},
    predictions: {ids: i32([n, 2], Array.from({length: 2 * n}, (_, k) => k % vocab)), probs: f32([n, 2], Array.from({length: 2 * n}, (_, k) => (k % 2 === 0 ? 0.5 : 0.2)))},
    blocks: {residualAttention: f32([L, n], residualAttention), ffn: f32([L, n], ffn), residualFfn: f32([L, n], residualFfn)},
    edges: {
      layer: i32([E], edges.layer), target: i32([E], edges.target), source: i32([E], edges.source),
      headContributions: f32([E, H], edges.heads), headAttention: f32([E, H], edges.attention),
    },
    neurons: {layer: i32([0], []), position: i32([0], []), index: i32([0, 2], []), contribution: f32([0, 2], []), activation: f32([0, 2], []), restContribution: f32([0], [])},
    projections: {
      kind: [], nodeKind: [], layer: i32([0], []), position: i32([0], []),
      topIds: i32([0, 2], []), topLogits: f32([0, 2], []), bottomIds: i32([0, 2], []), bottomLogits: f32([0, 2], []), topPrevRank: i32([0, 2], []),
    },
    vocabulary: {ids: i32([vocab], Array.from({length: vocab}, (_, i) => i)), strings: Array.from({length: vocab}, (_, i) => (i === 0 ? '<bos>' : ` w${i}`))},
  };
}
