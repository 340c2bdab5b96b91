/**
 * Reading `.lmtrace` files in the editor, without the Python daemon.
 *
 * The format is defined once, in `protocol/lmtrace.schema.json` (explained in
 * `protocol/README.md`); the Python reader is `lmscope.traces.lmtrace`. This module is its
 * TypeScript twin for the read-only custom editor and its webview: bytes in, a typed,
 * frozen {@link TraceFile} out, or one {@link TraceFileError} line naming the field.
 *
 * Input is hostile: msgpack containers and strings are bounded by the input size, extension
 * types are refused, every field's type is checked as the schema says, and no array is allocated
 * before its declared shape is checked against the bytes actually present. The cross-field
 * checks of `lmscope.traces.invariants` (shapes against the model's sizes, index ranges,
 * ordering, vocabulary coverage, finite floats) follow, with the same messages.
 *
 * The field-by-field checks are in wire.ts, the cross-field ones in invariants.ts. Over our
 * ~400-line guide, not split: its first half is the TraceFile types, documented field by field,
 * and the rest is the one reader that fills them (no second job to move out).
 */

import {decode} from '@msgpack/msgpack';
import type {Dtype, ModelFamily, ModelSource, NodeKind, ProjectionKind} from '../protocol/types';
import {TraceFileError} from '../errors';
import {readExperts, type StoredExperts} from './experts';
import {checkInvariants} from './invariants';
import {LIMITS} from './limits';
import {NESTED_PAST_MSGPACK, strictMsgpackProblem} from './scan';
import {
  ArrayQueue,
  bool, bytesFromHex, checkTokenBytes, enumList, int, Invalid, isMap, isNull, nestedTooDeeply, num, oneOf, pyRepr, section, str, stringList,
  TOKEN_BYTES_KEY, TOO_DEEP,
  type WireMap,
} from './wire';

export {TraceFileError};

export const MAGIC = 'lmscope-trace';
/** The newest format this reader understands; it reads every format up to this one. */
export const FORMAT_VERSION = 1;
/** Readers refuse larger files (same limit as the Python reader). */
export const MAX_TRACE_BYTES = 2 * 1024 ** 3;
/** Bound on msgpack array and map lengths, far above any real trace. */
const MAX_LIST_ITEMS = 2 ** 24;

/** Internal: a file newer than this reader (reported without "corrupt"). */
class NewerFormat extends Invalid {}

// ---- the decoded trace ------------------------------------------------------------------------
// Shapes use the schema's letters: L layers, n tokens (BOS included when prepended), H query
// heads, E stored attention edges, F stored FFN nodes, K = min(topNeurons, dFfn) neurons per
// node, P stored projections, k = min(projectionTopK, vocabSize), kPred = min(predictionTopK,
// vocabSize). Every numeric array is a flat, row-major copy owned by the TraceFile (treat it as
// read-only: typed arrays cannot be frozen); `[E, H]` means row e is `e*H .. e*H + H`.

/** The PEFT/LoRA adapter merged into the base weights before tracing (schema `$defs.adapter`). */
export interface AdapterFacts {
  /** The adapter folder, absolute. */
  readonly spec: string;
  readonly name: string;
  /** sha256 of adapter_config.json + adapter_model.safetensors. */
  readonly contentHash: string;
  readonly peftType: 'LORA';
  readonly dora: boolean;
  readonly rank: number;
  readonly alpha: number;
  readonly targetModules: readonly string[];
  /** The base model's spec and its own content hash. */
  readonly baseSpec: string;
  readonly baseHash: string;
}

export interface ModelFacts {
  readonly spec: string;
  readonly name: string;
  readonly source: ModelSource;
  readonly contentHash: string;
  readonly family: ModelFamily;
  readonly modelType: string;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly dModel: number;
  readonly dHead: number;
  readonly dFfn: number;
  readonly vocabSize: number;
  readonly contextLength: number;
  /** Attention and FFN read the same residual (GPT-NeoX); then there is no post_attention node. */
  readonly parallelBlocks: boolean;
  /**
   * The merged adapter; absent: the base alone (and every file written before adapters). With
   * one, `name` reads "base + adapter" and `contentHash` is the merged model's.
   */
  readonly adapter?: AdapterFacts;
}

export interface TraceSettings {
  readonly bosPrepended: boolean;
  /** Routes are answerable for every threshold >= this. */
  readonly minThreshold: number;
  readonly topNeurons: number;
  readonly projectionTopK: number;
  readonly predictionTopK: number;
}

export interface TraceEnvironment {
  readonly lmscopeVersion: string;
  readonly torchVersion: string;
  readonly transformersVersion: string;
  readonly pythonVersion: string;
  readonly dtype: Dtype;
  readonly device: string;
  readonly created: string;
}

/** The sizes every array is checked against. */
export interface TraceDims {
  readonly nLayers: number; // L
  readonly nTokens: number; // n
  readonly nHeads: number; // H
  readonly nEdges: number; // E
  readonly nFfnNodes: number; // F
  readonly nNeurons: number; // K
  readonly nProjections: number; // P
  readonly projectionTopK: number; // k
  readonly predictionTopK: number; // kPred
}

export interface TraceFile {
  readonly formatVersion: number;
  readonly model: ModelFacts;
  readonly settings: TraceSettings;
  readonly environment: TraceEnvironment;
  readonly dims: TraceDims;
  readonly tokens: {
    readonly prompt: string;
    readonly ids: Int32Array; // [n]
    readonly strings: readonly string[]; // [n]
    /** The bytes of each token that is a byte piece (not valid UTF-8 alone, so its string is
     * U+FFFD or empty), else null; all null when the file stores none
     * (`extra["lmscope.tokenBytes"]`). Show tokens with display.ts `displayToken(text, {bytes})`. */
    readonly bytes: readonly (Uint8Array | null)[]; // [n]
  };
  readonly predictions: {
    readonly ids: Int32Array; // [n, kPred]
    readonly probs: Float32Array; // [n, kPred]
  };
  /** Dense contributions. Parallel blocks: residualFfn is null (see the schema's `blocks`). */
  readonly blocks: {
    readonly residualAttention: Float32Array; // [L, n]
    readonly ffn: Float32Array; // [L, n]
    readonly residualFfn: Float32Array | null; // [L, n]
  };
  /** Stored attention edges, sorted by (layer, target, source); per-head values unthresholded. */
  readonly edges: {
    readonly layer: Int32Array; // [E]
    readonly target: Int32Array; // [E]
    readonly source: Int32Array; // [E]
    readonly headContributions: Float32Array; // [E, H]
    readonly headAttention: Float32Array; // [E, H]
  };
  /** Top neurons of stored FFN nodes, strongest first. */
  readonly neurons: {
    readonly layer: Int32Array; // [F]
    readonly position: Int32Array; // [F]
    readonly index: Int32Array; // [F, K]
    readonly contribution: Float32Array; // [F, K]
    readonly activation: Float32Array; // [F, K]
    readonly restContribution: Float32Array; // [F]
  };
  /** Row p: node (nodeKind[p], layer[p], position[p]) projected as kind[p]. */
  readonly projections: {
    readonly kind: readonly ProjectionKind[]; // [P]
    readonly nodeKind: readonly NodeKind[]; // [P]
    readonly layer: Int32Array; // [P]
    readonly position: Int32Array; // [P]
    readonly topIds: Int32Array; // [P, k]
    readonly topLogits: Float32Array; // [P, k]
    readonly bottomIds: Int32Array; // [P, k]
    readonly bottomLogits: Float32Array; // [P, k]
    readonly topPrevRank: Int32Array; // [P, k], -1: none
  };
  /** Token id -> display string, for every id the trace references. */
  readonly vocabulary: ReadonlyMap<number, string>;
  /** Token id -> bytes, for the vocabulary entries that are byte pieces (as `tokens.bytes`). */
  readonly vocabularyBytes: ReadonlyMap<number, Uint8Array>;
  /**
   * A mixture-of-experts model's layout and the experts of its detailed FFN nodes
   * (`extra["lmscope.experts"]`, checked as experts.ts says); null: a dense model or an older file.
   */
  readonly experts: StoredExperts | null;
  /** Reserved open object (namespaced keys); the keys above are read from it, the rest not interpreted. */
  readonly extra: Readonly<Record<string, unknown>>;
}

// ---- bytes -> document ------------------------------------------------------------------------

/**
 * Decode and fully validate a `.lmtrace` file. `name` (a path or file name) is used in messages.
 * Throws {@link TraceFileError} and nothing else.
 */
export function readTraceFile(bytes: Uint8Array, name?: string): TraceFile {
  const where = name === undefined ? 'trace file' : `trace file ${name}`;
  if (bytes.length === 0) throw new TraceFileError(`${where} is empty`);
  if (bytes.length > MAX_TRACE_BYTES) {
    throw new TraceFileError(`${where} is ${bytes.length} bytes, over the ${MAX_TRACE_BYTES}-byte limit`);
  }
  if (looksLikeJson(bytes)) {
    throw new TraceFileError(`${where} holds JSON (a JSON export?), not a .lmtrace file`);
  }
  // Every trace is a msgpack map (fixmap 0x80-0x8f, map16 0xde, map32 0xdf). Anything else is
  // some other file, which msgpack might otherwise half-parse into a misleading message.
  const first = bytes[0]!;
  if (!((first >= 0x80 && first <= 0x8f) || first === 0xde || first === 0xdf)) {
    throw new TraceFileError(`${where} is not an lmscope trace (not a msgpack map)`);
  }
  // Problems the decoder lets through but Python refuses (in file order, as Python finds them).
  const strictProblem = strictMsgpackProblem(bytes, Math.min(bytes.length, MAX_LIST_ITEMS));
  if (strictProblem === NESTED_PAST_MSGPACK) throw new TraceFileError(`corrupt ${where}: ${TOO_DEEP}`);
  if (strictProblem !== null) throw new TraceFileError(`corrupt ${where}: not valid msgpack (${strictProblem})`);
  let doc: unknown;
  try {
    doc = decodeBounded(bytes);
  } catch (e) {
    throw new TraceFileError(`corrupt ${where}: ${msgpackProblem(e, Math.min(bytes.length, MAX_LIST_ITEMS))}`);
  }
  // Anywhere in the document, before any other check reads it (as Python does).
  if (nestedTooDeeply(doc)) throw new TraceFileError(`corrupt ${where}: ${TOO_DEEP}`);
  if (!isMap(doc) || doc['magic'] !== MAGIC) {
    throw new TraceFileError(`${where} is not an lmscope trace (no '${MAGIC}' magic)`);
  }
  try {
    return load(doc);
  } catch (e) {
    if (e instanceof NewerFormat) throw new TraceFileError(`${where} ${e.message}`);
    if (e instanceof Invalid) throw new TraceFileError(`corrupt ${where}: ${e.message}`);
    // Not expected; still a file we cannot read, and callers rely on one error type.
    throw new TraceFileError(`corrupt ${where}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** A msgpack trace starts with a map byte; '{' or '[' after blanks means a JSON export. */
function looksLikeJson(bytes: Uint8Array): boolean {
  const end = Math.min(bytes.length, 4096);
  for (let i = 0; i < end; i++) {
    const b = bytes[i]!;
    if (b === 0x20 || (b >= 0x09 && b <= 0x0d)) continue; // Python's bytes.lstrip() blanks
    return b === 0x7b || b === 0x5b;
  }
  return false;
}

const NO_EXTENSIONS = 'msgpack extension values are not allowed';
const REFUSE_EXTENSIONS = {
  tryToEncode: () => null,
  decode: (): never => {
    throw new Error(NO_EXTENSIONS); // zero-length ones; longer ones fail maxExtLength first
  },
};

function decodeBounded(bytes: Uint8Array): unknown {
  const bound = Math.min(bytes.length, MAX_LIST_ITEMS);
  return decode(bytes, {
    maxStrLength: bytes.length,
    maxBinLength: bytes.length,
    maxArrayLength: bound,
    maxMapLength: bound,
    maxExtLength: 0,
    extensionCodec: REFUSE_EXTENSIONS,
    useBigInt64: false,
  });
}

/** One short reason for a msgpack decoding failure, worded as msgpack-python words it. */
function msgpackProblem(e: unknown, maxItems: number): string {
  const message = e instanceof Error ? e.message : String(e);
  const count = Number(/\((\d+)\)/.exec(message)?.[1] ?? NaN);
  // A string or bin longer than the whole file cannot be all there: Python says truncated too.
  if (/Insufficient data|outside the bounds|^Max length exceeded: (bin|UTF-8)/.test(message)) {
    return 'truncated (the data ends early)';
  }
  if (/^Max length exceeded: map/.test(message)) return `not valid msgpack (${count} exceeds max_map_len(${maxItems}))`;
  if (/^Max length exceeded: array/.test(message)) return `not valid msgpack (${count} exceeds max_array_len(${maxItems}))`;
  if (/^Max length exceeded: ext/.test(message)) return `not valid msgpack (${count + 1} exceeds max_ext_len(0))`;
  if (message === NO_EXTENSIONS) return NO_EXTENSIONS; // zero-length ones (Python's schema refuses them)
  if (/^Extra \d+ of \d+ byte/.test(message)) return 'not valid msgpack (extra bytes after the data)';
  if (/^Unrecognized type byte/.test(message)) return 'not valid msgpack (FormatError)'; // 0xc1
  return `not valid msgpack (${message.slice(0, 80) || 'unknown error'})`;
}

const MODEL_SOURCES: readonly ModelSource[] = ['default', 'hub', 'folder', 'gguf'];
const MODEL_FAMILIES: readonly ModelFamily[] = ['llama', 'gpt2', 'gpt_neox', 'opt', 'gpt_neo', 'gptj', 'bloom', 'phi', 'phi3', 'gemma', 'olmo', 'olmo2', 'mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe'];
const DTYPES: readonly Dtype[] = ['float32', 'float16', 'bfloat16'];
const NODE_KINDS: readonly NodeKind[] = ['embedding', 'post_attention', 'ffn', 'residual'];
const PROJECTION_KINDS: readonly ProjectionKind[] = ['lens', 'attention_update', 'ffn_update'];

// ---- document -> TraceFile --------------------------------------------------------------------

const TOP_LEVEL = [
  'magic', 'formatVersion', 'model', 'settings', 'environment', 'tokens', 'predictions',
  'blocks', 'edges', 'neurons', 'projections', 'vocabulary', 'extra',
] as const;

const ADAPTER_KEYS = ['spec', 'name', 'contentHash', 'peftType', 'dora', 'rank', 'alpha', 'targetModules', 'baseSpec', 'baseHash'] as const;

/** `model.adapter`, checked as the schema's `$defs.adapter`. */
function adapterFacts(value: unknown): AdapterFacts {
  const path = 'model.adapter';
  const a = section(value, path, ADAPTER_KEYS);
  const targetModules = stringList(a, path, 'targetModules', {maxItems: LIMITS.adapterTargets, maxLength: LIMITS.text});
  return {
    spec: str(a, path, 'spec'),
    name: str(a, path, 'name'),
    contentHash: str(a, path, 'contentHash'),
    peftType: oneOf(a, path, 'peftType', ['LORA'] as const),
    dora: bool(a, path, 'dora'),
    rank: int(a, path, 'rank', 1, LIMITS.adapterRank),
    alpha: num(a, path, 'alpha', LIMITS.magnitude.min, LIMITS.magnitude.max),
    targetModules,
    baseSpec: str(a, path, 'baseSpec'),
    baseHash: str(a, path, 'baseHash'),
  };
}

/** Version first (a newer file may add fields), then every field, then the invariants. */
function load(doc: WireMap): TraceFile {
  const version = doc['formatVersion'];
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    const found = version === undefined ? 'missing' : pyRepr(version);
    throw new Invalid(`formatVersion is ${found}, expected a positive integer`);
  }
  if (version > FORMAT_VERSION) {
    throw new NewerFormat(
      `was written by a newer lmscope (format ${version}); this extension reads format ${FORMAT_VERSION} — update the extension`,
    );
  }
  section(doc, 'top level', TOP_LEVEL, {requiredFirst: true});
  const arrays = new ArrayQueue(); // checked now, decoded after the whole document
  const m = section(doc['model'], 'model', [
    'spec', 'name', 'source', 'contentHash', 'family', 'modelType', 'nLayers', 'nHeads', 'nKvHeads',
    'dModel', 'dHead', 'dFfn', 'vocabSize', 'contextLength', 'parallelBlocks',
  ], {optional: ['adapter']});
  const model: ModelFacts = {
    spec: str(m, 'model', 'spec'),
    name: str(m, 'model', 'name'),
    source: oneOf(m, 'model', 'source', MODEL_SOURCES),
    contentHash: str(m, 'model', 'contentHash'),
    family: oneOf(m, 'model', 'family', MODEL_FAMILIES),
    modelType: str(m, 'model', 'modelType'),
    nLayers: int(m, 'model', 'nLayers', 1, LIMITS.nLayers),
    nHeads: int(m, 'model', 'nHeads', 1, LIMITS.nHeads),
    nKvHeads: int(m, 'model', 'nKvHeads', 1, LIMITS.nKvHeads),
    dModel: int(m, 'model', 'dModel', 1, LIMITS.dModel),
    dHead: int(m, 'model', 'dHead', 1, LIMITS.dHead),
    dFfn: int(m, 'model', 'dFfn', 1, LIMITS.dFfn),
    vocabSize: int(m, 'model', 'vocabSize', 1, LIMITS.vocabSize),
    contextLength: int(m, 'model', 'contextLength', 1, LIMITS.contextLength),
    parallelBlocks: bool(m, 'model', 'parallelBlocks'),
    ...(Object.hasOwn(m, 'adapter') ? {adapter: adapterFacts(m['adapter'])} : {}),
  };
  const s = section(doc['settings'], 'settings', ['bosPrepended', 'minThreshold', 'topNeurons', 'projectionTopK', 'predictionTopK']);
  const settings: TraceSettings = {
    bosPrepended: bool(s, 'settings', 'bosPrepended'),
    minThreshold: num(s, 'settings', 'minThreshold', 0, 1),
    topNeurons: int(s, 'settings', 'topNeurons', 0, LIMITS.topNeurons),
    projectionTopK: int(s, 'settings', 'projectionTopK', 1, LIMITS.projectionTopK),
    predictionTopK: int(s, 'settings', 'predictionTopK', 1, LIMITS.predictionTopK),
  };
  const env = section(doc['environment'], 'environment', [
    'lmscopeVersion', 'torchVersion', 'transformersVersion', 'pythonVersion', 'dtype', 'device', 'created',
  ]);
  const environment: TraceEnvironment = {
    lmscopeVersion: str(env, 'environment', 'lmscopeVersion'),
    torchVersion: str(env, 'environment', 'torchVersion'),
    transformersVersion: str(env, 'environment', 'transformersVersion'),
    pythonVersion: str(env, 'environment', 'pythonVersion'),
    dtype: oneOf(env, 'environment', 'dtype', DTYPES),
    device: str(env, 'environment', 'device'),
    created: str(env, 'environment', 'created'),
  };
  const t = section(doc['tokens'], 'tokens', ['prompt', 'ids', 'strings']);
  const tokens = {
    prompt: str(t, 'tokens', 'prompt', LIMITS.prompt),
    ids: arrays.int32(t, 'tokens', 'ids'),
    strings: stringList(t, 'tokens', 'strings', {maxItems: LIMITS.tokens, maxLength: LIMITS.tokenText}),
  };
  const {share, magnitude} = LIMITS;
  const p = section(doc['predictions'], 'predictions', ['ids', 'probs']);
  const predictions = {ids: arrays.int32(p, 'predictions', 'ids'), probs: arrays.float32(p, 'predictions', 'probs', share)};
  const b = section(doc['blocks'], 'blocks', ['residualAttention', 'ffn', 'residualFfn']);
  const blocks = {
    residualAttention: arrays.float32(b, 'blocks', 'residualAttention', share),
    ffn: arrays.float32(b, 'blocks', 'ffn', share),
    residualFfn: isNull(b, 'blocks', 'residualFfn') ? null : arrays.float32(b, 'blocks', 'residualFfn', share),
  };
  const e = section(doc['edges'], 'edges', ['layer', 'target', 'source', 'headContributions', 'headAttention']);
  const edges = {
    layer: arrays.int32(e, 'edges', 'layer'),
    target: arrays.int32(e, 'edges', 'target'),
    source: arrays.int32(e, 'edges', 'source'),
    headContributions: arrays.float32(e, 'edges', 'headContributions', share),
    headAttention: arrays.float32(e, 'edges', 'headAttention', share),
  };
  const u = section(doc['neurons'], 'neurons', ['layer', 'position', 'index', 'contribution', 'activation', 'restContribution']);
  const neurons = {
    layer: arrays.int32(u, 'neurons', 'layer'),
    position: arrays.int32(u, 'neurons', 'position'),
    index: arrays.int32(u, 'neurons', 'index'),
    contribution: arrays.float32(u, 'neurons', 'contribution', share),
    activation: arrays.float32(u, 'neurons', 'activation', magnitude),
    restContribution: arrays.float32(u, 'neurons', 'restContribution', share),
  };
  const j = section(doc['projections'], 'projections', [
    'kind', 'nodeKind', 'layer', 'position', 'topIds', 'topLogits', 'bottomIds', 'bottomLogits', 'topPrevRank',
  ]);
  const projections = {
    kind: enumList(j, 'projections', 'kind', PROJECTION_KINDS),
    nodeKind: enumList(j, 'projections', 'nodeKind', NODE_KINDS),
    layer: arrays.int32(j, 'projections', 'layer'),
    position: arrays.int32(j, 'projections', 'position'),
    topIds: arrays.int32(j, 'projections', 'topIds'),
    topLogits: arrays.float32(j, 'projections', 'topLogits', magnitude),
    bottomIds: arrays.int32(j, 'projections', 'bottomIds'),
    bottomLogits: arrays.float32(j, 'projections', 'bottomLogits', magnitude),
    topPrevRank: arrays.int32(j, 'projections', 'topPrevRank'),
  };
  const v = section(doc['vocabulary'], 'vocabulary', ['ids', 'strings']);
  const vocabIds = arrays.int32(v, 'vocabulary', 'ids');
  const vocabStrings = stringList(v, 'vocabulary', 'strings', {maxItems: LIMITS.vocabulary, maxLength: LIMITS.tokenText});
  // Its nesting was bounded with the whole document's (it is passed to a webview, whose
  // structured clone recurses).
  if (!isMap(doc['extra'])) throw new Invalid(`extra: ${pyRepr(doc['extra'])} is not of type 'object'`);

  arrays.decodeAll();
  // As Python's decoding: the vocabulary's own shape and order, before the cross-field checks.
  if (vocabIds.shape.length !== 1 || vocabStrings.length !== vocabIds.data.length) {
    throw new Invalid(`vocabulary has ${vocabIds.data.length} ids but ${vocabStrings.length} strings`);
  }
  for (let i = 1; i < vocabIds.data.length; i++) {
    if (vocabIds.data[i]! <= vocabIds.data[i - 1]!) throw new Invalid('vocabulary.ids are not strictly increasing');
  }
  // The keys of `extra` this reader reads, checked where Python's reader checks them.
  const tokenBytesProblem = checkTokenBytes(doc['extra'], tokens.strings.length, vocabStrings.length);
  if (tokenBytesProblem !== null) throw new Invalid(tokenBytesProblem);
  // The experts of an MoE trace, where Python's reader checks them (lmscope.traces.wire).
  const experts = readExperts(doc['extra'], model.nLayers, tokens.strings.length);
  if (typeof experts === 'string') throw new Invalid(experts);
  if (experts !== null && experts.layout.flatWidth > model.dFfn) throw new Invalid(`extra.lmscope.experts.layout: wider than model.dFfn`);
  const wire = {model, settings, tokens, predictions, blocks, edges, neurons, projections, vocabIds, vocabStrings};
  const dims = checkInvariants(wire);
  const vocabulary = new Map<number, string>();
  vocabIds.data.forEach((id, i) => vocabulary.set(id, vocabStrings[i]!));
  const storedBytes = doc['extra'][TOKEN_BYTES_KEY] as {tokens: string[]; vocabulary: string[]} | undefined;
  const tokenBytes = storedBytes?.tokens.map(bytesFromHex) ?? tokens.strings.map(() => null);
  const vocabularyBytes = new Map<number, Uint8Array>();
  storedBytes?.vocabulary.forEach((hex, i) => {
    const bytes = bytesFromHex(hex);
    if (bytes !== null) vocabularyBytes.set(vocabIds.data[i]!, bytes);
  });
  const freeze = Object.freeze;
  return freeze({
    formatVersion: version,
    model: freeze(model),
    settings: freeze(settings),
    environment: freeze(environment),
    dims: freeze(dims),
    tokens: freeze({prompt: tokens.prompt, ids: tokens.ids.data, strings: freeze(tokens.strings), bytes: freeze(tokenBytes)}),
    predictions: freeze({ids: predictions.ids.data, probs: predictions.probs.data}),
    blocks: freeze({
      residualAttention: blocks.residualAttention.data,
      ffn: blocks.ffn.data,
      residualFfn: blocks.residualFfn?.data ?? null,
    }),
    edges: freeze({
      layer: edges.layer.data,
      target: edges.target.data,
      source: edges.source.data,
      headContributions: edges.headContributions.data,
      headAttention: edges.headAttention.data,
    }),
    neurons: freeze({
      layer: neurons.layer.data,
      position: neurons.position.data,
      index: neurons.index.data,
      contribution: neurons.contribution.data,
      activation: neurons.activation.data,
      restContribution: neurons.restContribution.data,
    }),
    projections: freeze({
      kind: freeze(projections.kind),
      nodeKind: freeze(projections.nodeKind),
      layer: projections.layer.data,
      position: projections.position.data,
      topIds: projections.topIds.data,
      topLogits: projections.topLogits.data,
      bottomIds: projections.bottomIds.data,
      bottomLogits: projections.bottomLogits.data,
      topPrevRank: projections.topPrevRank.data,
    }),
    vocabulary,
    vocabularyBytes,
    experts,
    extra: freeze({...(doc['extra'])}),
  });
}
