/**
 * The bounds of a `.lmtrace` file that the reader checks, as numbers. They are written once, in
 * `protocol/lmtrace.schema.json` (JSON Schema's `maximum`, `maxLength` and `maxItems`, the value
 * ranges of `$defs.shareArray` and `$defs.magnitudeArray`, and `x-maxNesting`), where each says
 * why it is generous for any real model; protocol/README.md lists them. Shared code reads no
 * files, so they are copied here, and extension/test/lmtrace.test.ts checks every one against
 * the schema. The Python reader reads the schema itself (`lmscope.traces.wire.limits`).
 */

export const LIMITS = {
  /** model.* integer maxima (the minimum of each is 1). */
  nLayers: 1024,
  nHeads: 1024,
  nKvHeads: 1024,
  dModel: 2 ** 17,
  dHead: 2 ** 17,
  dFfn: 2 ** 20,
  vocabSize: 2 ** 23,
  contextLength: 2 ** 30,
  /** settings.* integer maxima. */
  topNeurons: 2 ** 20,
  projectionTopK: 2 ** 23,
  predictionTopK: 2 ** 23,
  /** Characters (code points) of the short text fields: model names, hashes, versions, device. */
  text: 4096,
  /** Characters of tokens.prompt. */
  prompt: 2 ** 24,
  /** Characters of one token's display string (tokens.strings, vocabulary.strings). */
  tokenText: 4096,
  /** Items of tokens.strings: the most tokens a trace holds (n). */
  tokens: 2 ** 20,
  /** Items of vocabulary.strings. */
  vocabulary: 2 ** 23,
  /** Contributions, attention weights, probabilities: each, and the shares of one step summed. */
  share: {min: 0, max: 1.0001},
  /** Logits and signed activations. */
  magnitude: {min: -1e9, max: 1e9},
  /** model.adapter: the LoRA rank's maximum (the dFfn bound) and the most target modules. */
  adapterRank: 2 ** 20,
  adapterTargets: 1024,
  /** Maps and arrays nest at most this deep in the whole document (the top-level map is 1). */
  nesting: 100,
} as const;

export interface ValueRange {
  readonly min: number;
  readonly max: number;
}
