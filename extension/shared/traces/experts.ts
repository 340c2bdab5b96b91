/**
 * Experts in a trace: how a mixture-of-experts layer's neurons are numbered, and the experts
 * table of the detailed FFN nodes (docs/method.md, "Experts (mixture of experts)"). The
 * TypeScript twin of `lmscope.traces.experts`: the same layout arithmetic and the same checks of
 * `extra["lmscope.experts"]`, with the same messages (a damaged table is refused with its path).
 *
 * The stored value (protocol/lmtrace.schema.json, `extra` -> `lmscope.experts`):
 *
 *     {layout: {nExperts: E, topK: k, dExpert: d_e, nShared: S, dShared: d_s, dDense,
 *               sparseLayers: [layer, ...]},
 *      nodes: {layer: [F'], position: [F'], expert: [F'][k+S], gate: [F'][k+S],
 *              contribution: [F'][k+S], rest: [F']}}
 *
 * Routed expert e is slot e, shared expert s is slot E + s. Neurons of sparse layers have flat
 * ids over the layer's experts, expert-major: neuron n of slot e is `slotStart(e) + n`.
 */

import {isMap, type WireMap} from './wire';

export const EXPERTS_KEY = 'lmscope.experts';
const WHERE = `extra.${EXPERTS_KEY}`;
const MAX_EXPERTS = 65_536; // far above any released model (DeepSeek-V3: 256 routed)
const MAX_WIDTH = 2 ** 24; // an expert's neurons
const SHARE_SLACK = 1.001; // one step's shares sum to 1 up to float32 rounding

/** How a model's sparse layers are numbered: experts, slots and flat neuron ids. */
export class ExpertLayout {
  constructor(
    readonly nExperts: number, // routed experts per sparse layer (E)
    readonly topK: number, // experts chosen per token (k)
    readonly dExpert: number, // neurons per routed expert (d_e)
    readonly nShared: number, // shared experts per sparse layer (S)
    readonly dShared: number, // neurons per shared expert (d_s; 0 without shared experts)
    readonly sparseLayers: readonly number[], // the layers whose FFN is a mixture
    readonly dDense: number, // neurons of the dense layers between sparse ones (Qwen-MoE), else 0
  ) {
    Object.freeze(this);
  }

  get nSlots(): number {
    return this.nExperts + this.nShared;
  }

  /** Flat neuron ids of a sparse layer: E·d_e + S·d_s. */
  get flatWidth(): number {
    return this.nExperts * this.dExpert + this.nShared * this.dShared;
  }

  /** Neurons that are parts at one FFN node: those of the k chosen and the S shared. */
  get nodeNeurons(): number {
    return this.topK * this.dExpert + this.nShared * this.dShared;
  }

  isSparse(layer: number): boolean {
    return this.sparseLayers.includes(layer);
  }

  /** Neurons that are parts at one FFN node of `layer` (sparse: `nodeNeurons`). */
  ffnWidth(layer: number): number {
    return this.isSparse(layer) ? this.nodeNeurons : this.dDense;
  }

  slotWidth(slot: number): number {
    return slot < this.nExperts ? this.dExpert : this.dShared;
  }

  /** The first flat neuron id of `slot`. */
  slotStart(slot: number): number {
    if (slot < this.nExperts) return slot * this.dExpert;
    return this.nExperts * this.dExpert + (slot - this.nExperts) * this.dShared;
  }

  /** A flat neuron id -> [slot, neuron within the expert]. */
  split(flat: number): [slot: number, neuron: number] {
    const routed = this.nExperts * this.dExpert;
    if (!Number.isInteger(flat) || flat < 0 || flat >= this.flatWidth) {
      throw new RangeError(`neuron ${flat} is outside the ${this.flatWidth} of a sparse layer`);
    }
    if (flat < routed) return [Math.floor(flat / this.dExpert), flat % this.dExpert];
    return [this.nExperts + Math.floor((flat - routed) / this.dShared), (flat - routed) % this.dShared];
  }

  /** "E3" for routed expert 3, "S0" for shared expert 0. */
  slotName(slot: number): string {
    return slot < this.nExperts ? `E${slot}` : `S${slot - this.nExperts}`;
  }

  /** "L5.E3.N120" for a neuron of a sparse layer, "L5.N120" for a dense layer's. */
  neuronLabel(layer: number, flat: number): string {
    if (!this.isSparse(layer)) return `L${layer}.N${flat}`;
    const [slot, neuron] = this.split(flat);
    return `L${layer}.${this.slotName(slot)}.N${neuron}`;
  }
}

/** The experts of the detailed FFN nodes of sparse layers (F' rows, w = k + S slots each). */
export interface ExpertTable {
  readonly layer: Int32Array; // [F']
  readonly position: Int32Array; // [F']
  readonly expert: Int32Array; // [F', w] slots, strongest contribution first
  readonly gate: Float32Array; // [F', w]  g[i,e] (shared: its gate, 1 without one)
  readonly contribution: Float32Array; // [F', w]  c_e at the expert step
  readonly rest: Float32Array; // [F']  c_rest of the non-FFN part x'_i − f_i
}

export interface StoredExperts {
  readonly layout: ExpertLayout;
  readonly table: ExpertTable;
}

/** An integer in low..high (Python's `type(v) is int`: JS cannot tell 3.0 from 3). */
function count(value: unknown, low: number, high: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && low <= value && value <= high;
}

function sameKeys(value: WireMap, keys: readonly string[]): boolean {
  const own = Object.keys(value);
  return own.length === keys.length && keys.every((k) => Object.prototype.hasOwnProperty.call(value, k));
}

const LAYOUT_KEYS = ['nExperts', 'topK', 'dExpert', 'nShared', 'dShared', 'dDense', 'sparseLayers'];
const NODE_KEYS = ['layer', 'position', 'expert', 'gate', 'contribution', 'rest'];

function readLayout(value: unknown, nLayers: number): ExpertLayout | string {
  if (!isMap(value) || !sameKeys(value, LAYOUT_KEYS)) return `${WHERE}.layout: not a map of ${[...LAYOUT_KEYS].sort().join(', ')}`;
  const e = value['nExperts'];
  const k = value['topK'];
  if (!count(e, 1, MAX_EXPERTS) || !count(k, 1, e)) return `${WHERE}.layout: nExperts must be 1..${MAX_EXPERTS} and topK 1..nExperts`;
  const dExpert = value['dExpert'];
  const nShared = value['nShared'];
  if (!count(dExpert, 1, MAX_WIDTH) || !count(nShared, 0, 64)) return `${WHERE}.layout: dExpert must be 1..${MAX_WIDTH} and nShared 0..64`;
  const dShared = value['dShared'];
  if (!count(dShared, nShared ? 1 : 0, MAX_WIDTH)) return `${WHERE}.layout: dShared must be 1..${MAX_WIDTH} with shared experts, else 0`;
  const dDense = value['dDense'];
  if (!count(dDense, 0, MAX_WIDTH)) return `${WHERE}.layout: dDense must be 0..${MAX_WIDTH}`;
  const layers = value['sparseLayers'];
  if (!Array.isArray(layers) || !layers.every((v) => count(v, 0, nLayers - 1)) || layers.some((v: number, i) => i > 0 && v <= (layers[i - 1] as number))) {
    return `${WHERE}.layout.sparseLayers: not increasing layers below model.nLayers`;
  }
  return new ExpertLayout(e, k, dExpert, nShared, dShared, Object.freeze([...layers]), dDense);
}

/** A `rows` x `width` list of lists of finite numbers, flat (row-major), or what is wrong. */
function matrix(value: unknown, rows: number, width: number, path: string): number[] | string {
  if (!Array.isArray(value) || value.length !== rows) return `${path}: not a list of ${rows} rows`;
  const flat: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const row: unknown = value[i];
    if (!Array.isArray(row) || row.length !== width) return `${path}[${i}]: not a list of ${width} numbers`;
    if (!row.every((v) => typeof v === 'number' && Number.isFinite(v))) return `${path}[${i}]: holds something other than finite numbers`;
    for (const v of row as number[]) flat.push(v);
  }
  return flat;
}

/**
 * The experts a trace stores (null when it stores none), or what is wrong with them: the
 * message names the field, as Python's `lmscope.traces.experts.read` words it.
 */
export function readExperts(extra: WireMap, nLayers: number, nTokens: number): StoredExperts | string | null {
  if (!Object.prototype.hasOwnProperty.call(extra, EXPERTS_KEY)) return null;
  const value = extra[EXPERTS_KEY];
  if (!isMap(value) || !sameKeys(value, ['layout', 'nodes'])) return `${WHERE}: not a map of \`layout\` and \`nodes\``;
  const layout = readLayout(value['layout'], nLayers);
  if (typeof layout === 'string') return layout;
  const nodes = value['nodes'];
  if (!isMap(nodes) || !sameKeys(nodes, NODE_KEYS)) return `${WHERE}.nodes: not a map of ${NODE_KEYS.join(', ')}`;
  const rows = Array.isArray(nodes['layer']) ? nodes['layer'].length : -1;
  const width = layout.topK + layout.nShared;
  const where = `${WHERE}.nodes`;
  const columns: Partial<Columns> = {};
  for (const name of ['layer', 'position', 'rest'] as const) {
    const column = nodes[name];
    const got = matrix(Array.isArray(column) ? column.map((v: unknown) => [v]) : null, rows, 1, `${where}.${name}`);
    if (typeof got === 'string') return got;
    columns[name] = got;
  }
  for (const name of ['expert', 'gate', 'contribution'] as const) {
    const got = matrix(nodes[name], rows, width, `${where}.${name}`);
    if (typeof got === 'string') return got;
    columns[name] = got;
  }
  const c = columns as Columns; // every column was filled above
  const problem = checkRows(layout, c, rows, width, nTokens, where);
  if (problem !== null) return problem;
  const table: ExpertTable = Object.freeze({
    layer: Int32Array.from(c.layer),
    position: Int32Array.from(c.position),
    expert: Int32Array.from(c.expert),
    gate: Float32Array.from(c.gate),
    contribution: Float32Array.from(c.contribution),
    rest: Float32Array.from(c.rest),
  });
  return Object.freeze({layout, table});
}

interface Columns {
  layer: number[];
  position: number[];
  expert: number[];
  gate: number[];
  contribution: number[];
  rest: number[];
}

/** The cross-field checks of the table's rows, in Python's order and words. */
function checkRows(layout: ExpertLayout, c: Columns, rows: number, width: number, nTokens: number, where: string): string | null {
  for (const name of ['layer', 'position', 'expert'] as const) {
    if (c[name].some((v) => v !== Math.trunc(v))) return `${where}.${name}: holds numbers that are not integers`;
  }
  if (!c.layer.every((l) => layout.isSparse(l))) return `${where}.layer: a layer that is not in layout.sparseLayers`;
  if (c.position.some((p) => p < 0 || p >= nTokens)) return `${where}.position: outside the token positions`;
  const keys = new Set(c.layer.map((l, i) => l * nTokens + c.position[i]!));
  if (keys.size !== rows) return `${where}: two rows for the same (layer, position)`;
  if (c.expert.some((s) => s < 0 || s >= layout.nSlots)) return `${where}.expert: a slot outside 0..${layout.nSlots - 1}`;
  for (let r = 0; r < rows; r++) {
    // Exactly topK distinct routed slots and each shared slot once (slots < E are routed).
    const slots = c.expert.slice(r * width, r * width + width);
    const routed = slots.filter((s) => s < layout.nExperts);
    const shared = slots.filter((s) => s >= layout.nExperts).sort((a, b) => a - b);
    if (routed.length !== layout.topK || new Set(routed).size !== routed.length || shared.some((s, i) => s !== layout.nExperts + i)) {
      return `${where}.expert: each row needs topK distinct experts and every shared slot`;
    }
  }
  if (c.gate.some((g) => g < 0 || g > 1)) return `${where}.gate: a gate outside [0, 1]`;
  if (c.contribution.some((v) => v < 0 || v > 1) || c.rest.some((v) => v < 0 || v > 1)) return `${where}: a contribution outside [0, 1]`;
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let x = r * width; x < r * width + width; x++) sum += c.contribution[x]!;
    if (sum + c.rest[r]! > SHARE_SLACK) return `${where}: a row's contributions sum to more than 1`;
  }
  return null;
}
