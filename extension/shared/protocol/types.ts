// generated from protocol/ by protocol/generate-ts.mjs — do not edit.
// Change the JSON Schemas or protocol/methods.json, then run `npm run generate:protocol`.

/**
 * What a graph node stands for: the token embedding (layer 0), the residual stream after attention, the FFN output, or the residual stream after the whole block.
 */
export type NodeKind = "embedding" | "post_attention" | "ffn" | "residual";

/**
 * A node of the information-flow graph, identified structurally (never as an encoded string).
 */
export interface NodeId {
  /**
   * What the node stands for.
   */
  kind: NodeKind;
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Token position in the trace, from 0 (BOS included when prepended).
   */
  position: number;
}

/**
 * How information moves along an edge: attention from another position, the residual connection, or through the FFN block.
 */
export type EdgeKind = "attention" | "residual" | "ffn";

/**
 * How a route is thresholded: `renormalize` rescales the kept contributions of each node to sum to 1 before thresholding the next layer; `raw` thresholds the unrescaled contributions.
 *
 * @default "renormalize"
 */
export type ThresholdMode = "renormalize" | "raw";

/**
 * A route threshold τ: edges carrying no more than this share of a node's input are dropped. Its default is the threshold a route is shown at when nobody chose one (the command line, the editor's graph and its setting, hover cards, the nodes a trace stores detail for); it must be >= the trace's minThreshold.
 *
 * @default 0.04
 */
export type Threshold = number;

/**
 * The smallest route threshold a trace answers: lower keeps more edges and makes bigger traces.
 *
 * @default 0.01
 */
export type MinThreshold = number;

/**
 * Which nodes' neuron lists and vocabulary projections a trace stores (and its saved file keeps): `route`, the nodes of the last token's renormalised route at the default Threshold (fast), or `all`, every node of any route at the trace's minThreshold (on a CPU ~45x the forward pass at 200 tokens). The daemon answers any node of a trace it made either way, computing what is not stored.
 *
 * @default "route"
 */
export type DetailScope = "route" | "all";

/**
 * A token position of the trace; negative values count from the end (-1, the default: the last token).
 *
 * @default -1
 */
export type TokenPosition = number;

/**
 * A trace held by the daemon, as returned by lmscope/trace or lmscope/openTrace. Opaque to clients: compare and send back, never parse.
 */
export type Handle = string;

/**
 * Floating-point type of the model's weights and activations.
 */
export type Dtype = "float32" | "float16" | "bfloat16";

/**
 * Where to run the model: `cpu`, `auto` (the best available accelerator, else the CPU), `cuda` or `cuda:N`, or `mps`.
 *
 * @default "cpu"
 */
export type DeviceRequest = string;

/**
 * Where a model was loaded from: the embedded default model, a Hugging Face hub id, a local folder, or a .gguf file.
 */
export type ModelSource = "default" | "hub" | "folder" | "gguf";

/**
 * The adapter family that reads the model's blocks.
 */
export type ModelFamily =
  | "llama"
  | "gpt2"
  | "gpt_neox"
  | "opt"
  | "gpt_neo"
  | "gptj"
  | "bloom"
  | "phi"
  | "phi3"
  | "gemma"
  | "olmo"
  | "olmo2"
  | "mixtral"
  | "qwen2_moe"
  | "qwen3_moe"
  | "olmoe";

/**
 * The model loaded in the daemon: identity, architecture and where it runs.
 */
export interface ModelInfo {
  /**
   * What the user asked for: "default", a hub id, a folder or a .gguf path.
   */
  spec: string;
  /**
   * Display name.
   */
  name: string;
  /**
   * Where the model was loaded from.
   */
  source: ModelSource;
  /**
   * sha256 of the weight files, or the hub revision; equal hashes mean the same weights.
   */
  contentHash: string;
  /**
   * Adapter family.
   */
  family: ModelFamily;
  /**
   * transformers' config.model_type.
   */
  modelType: string;
  /**
   * Number of transformer blocks.
   */
  nLayers: number;
  /**
   * Attention (query) heads per layer.
   */
  nHeads: number;
  /**
   * Key/value heads per layer (fewer than nHeads with grouped-query attention).
   */
  nKvHeads: number;
  /**
   * Width of the residual stream.
   */
  dModel: number;
  /**
   * Width of one attention head.
   */
  dHead: number;
  /**
   * Neurons per FFN block.
   */
  dFfn: number;
  /**
   * Size of the vocabulary (rows of the unembedding).
   */
  vocabSize: number;
  /**
   * Longest prompt the model accepts, in tokens.
   */
  contextLength: number;
  /**
   * Attention and FFN read the same residual (GPT-NeoX, GPT-J, Phi), so there is no post_attention node on the FFN's input.
   */
  parallelBlocks: boolean;
  /**
   * Where the model runs, resolved (e.g. "cpu", "cuda:0"); under a device map, where token ids go (the first shard).
   */
  device: string;
  /**
   * Present when the model was split by a device map: module name -> device ("0" for cuda:0, "cpu", "disk"), as accelerate placed it.
   */
  deviceMap?: {
    [k: string]: string | undefined;
  };
  /**
   * Type of the weights as loaded.
   */
  dtype: Dtype;
  /**
   * Memory taken by the weights, in bytes.
   */
  parameterBytes: number;
}

/**
 * A vocabulary token with a score; the field holding it says whether the score is a probability or a logit.
 */
export interface TokenScore {
  /**
   * The token as display text (untrusted: escape before rendering).
   */
  token: string;
  /**
   * Token id in the model's vocabulary.
   */
  id: number;
  /**
   * Probability or logit, as the containing field says.
   */
  score: number;
}

/**
 * The model a trace was made with: enough to tell whether the loaded model is the same one.
 */
export interface TraceModelRef {
  /**
   * Display name.
   */
  name: string;
  /**
   * What the user asked for when the trace was made.
   */
  spec: string;
  /**
   * sha256 of the weight files, or the hub revision.
   */
  contentHash: string;
}

/**
 * A trace held by the daemon: its handle, its prompt and what the client needs to draw and query it.
 */
export interface TraceSummary {
  /**
   * Names this trace in later requests until lmscope/closeTrace.
   */
  handle: Handle;
  /**
   * The traced text.
   */
  prompt: string;
  /**
   * Display text of every token, BOS included when prepended; positions index this list.
   */
  tokens: string[];
  /**
   * Number of transformer blocks.
   */
  nLayers: number;
  /**
   * Attention heads per layer.
   */
  nHeads: number;
  /**
   * Neurons per FFN block.
   */
  dFfn: number;
  /**
   * Attention and FFN read the same residual (no post_attention node feeds the FFN).
   */
  parallelBlocks: boolean;
  /**
   * Routes are answerable for every threshold >= this.
   */
  minThreshold: number;
  /**
   * The model the trace was made with.
   */
  model: TraceModelRef;
  /**
   * Top next tokens after the last token, most probable first; score = probability.
   */
  predictions: TokenScore[];
  /**
   * True when the trace was made in this daemon and its model is still loaded, so queries that need the model work.
   */
  live: boolean;
  /**
   * The .lmtrace file, when the trace was saved or opened; null otherwise.
   */
  path: string | null;
}

/**
 * One attention head or one FFN neuron.
 */
export interface UnitRef {
  /**
   * A head or a neuron.
   */
  kind: "head" | "neuron";
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Head or neuron index within the layer, from 0.
   */
  index: number;
}

/**
 * A whole attention or FFN block of one layer.
 */
export interface BlockRef {
  /**
   * The attention block or the FFN block.
   */
  kind: "attention" | "ffn";
  /**
   * Transformer block, from 0.
   */
  layer: number;
}

/**
 * An expert of a mixture-of-experts FFN (`L5.E3`, shared: `L5.S0`), or one neuron of it (`L5.E3.N120`): docs/method.md, "Experts".
 */
export interface ExpertRef {
  /**
   * An expert, or a neuron of one (then `index` is required).
   */
  kind: "expert" | "expert_neuron";
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Routed expert e, or shared expert s when `shared`, from 0.
   */
  expert: number;
  /**
   * A shared expert (every token goes through it), not a routed one.
   */
  shared: boolean;
  /**
   * expert_neuron: the neuron within the expert, from 0.
   */
  index?: number;
}

/**
 * A model component, told apart by `kind`: a head or neuron carries its `index`; an attention or FFN block has none; an expert or expert neuron names its expert.
 */
export type ComponentRef = UnitRef | BlockRef | ExpertRef;

/**
 * An attention edge of the route at the component's layer.
 */
export interface CardEdge {
  /**
   * Position attended from (source <= target).
   */
  source: number;
  /**
   * Position attending.
   */
  target: number;
  /**
   * The component's part of the edge's weight.
   */
  weight: number;
}

/**
 * The component's part in one route of a trace.
 */
export interface CardContext {
  /**
   * The trace.
   */
  handle: Handle;
  /**
   * The route's output token, resolved to a position (>= 0).
   */
  token: number;
  /**
   * The route's threshold.
   */
  threshold: number;
  /**
   * The route's threshold mode.
   */
  mode: ThresholdMode;
  /**
   * Part of the output flowing through this component on the route (0 when it is not on it).
   */
  share: number;
  /**
   * Attention components: this head's or block's edges on the route at this layer; [] for FFN components.
   */
  edges: CardEdge[];
  /**
   * Neurons: the activation at the route's FFN node of this layer, when known; null otherwise.
   */
  activation: number | null;
  /**
   * Experts and expert neurons (optional): the router's gate g[i,e] the forward pass multiplied the expert by at the route's output token (0 when the router did not choose it there), when known; null otherwise.
   */
  gate?: number | null;
}

/**
 * The interpretation card of a component: the tokens it promotes and suppresses, and its part in a route when a trace was given.
 */
export interface Card {
  /**
   * Heading, e.g. "L12H3 · attention head".
   */
  title: string;
  /**
   * The component described.
   */
  component: ComponentRef;
  /**
   * Tokens the component's output raises most, strongest first; score = logit.
   */
  promoted: TokenScore[];
  /**
   * Tokens it lowers most, strongest first; score = logit. May be empty, with a note saying why.
   */
  suppressed: TokenScore[];
  /**
   * Its part in the route of the given trace; null without a trace.
   */
  context: CardContext | null;
  /**
   * Plain-language caveats ("needs the model", "not on the route", ...).
   */
  notes: string[];
  /**
   * The card rendered as Markdown, every untrusted text (tokens, prompt) escaped.
   */
  markdown: string;
}

/**
 * An LSP position: zero-based line and character offset (UTF-16 code units, as negotiated by LSP).
 */
export interface Position {
  /**
   * Zero-based line.
   */
  line: number;
  /**
   * Zero-based character offset within the line.
   */
  character: number;
}

/**
 * An LSP range: start inclusive, end exclusive.
 */
export interface Range {
  /**
   * First character of the range.
   */
  start: Position;
  /**
   * Just past the last character.
   */
  end: Position;
}

/**
 * What the daemon advertises in InitializeResult.capabilities.experimental.lmscope.
 */
export interface LmscopeCapabilities {
  /**
   * The lmscope protocol the daemon speaks.
   */
  protocolVersion: "1";
  /**
   * The lmscope Python package's version.
   */
  version: string;
}

/**
 * On A's route only, B's only, or both.
 */
export type DiffMembership = "a" | "b" | "both";

/**
 * A node of either route: its position in A and in B, null where the alignment has no partner for it.
 */
export interface DiffNodeId {
  /**
   * What the node stands for.
   */
  kind: NodeKind;
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Position in A (null: B's position has no partner in A).
   */
  positionA: number | null;
  /**
   * Position in B (null: A's position has no partner in B).
   */
  positionB: number | null;
}

/**
 * A node's share of the prediction in A and B (0 off a route) and delta = B - A.
 */
export interface DiffNodeRow {
  /**
   * The node.
   */
  node: DiffNodeId;
  /**
   * Share of the prediction on A's route (0 off it).
   */
  shareA: number;
  /**
   * Share of the prediction on B's route (0 off it).
   */
  shareB: number;
  /**
   * B minus A.
   */
  delta: number;
  /**
   * On A's route only, B's only, or both.
   */
  membership: DiffMembership;
}

/**
 * An edge's weight in A and B (0 off a route), delta = B - A, and the share of the prediction it passes down in each.
 */
export interface DiffEdgeRow {
  /**
   * How information moves along the edge.
   */
  kind: EdgeKind;
  /**
   * Lower end.
   */
  source: DiffNodeId;
  /**
   * Upper end.
   */
  target: DiffNodeId;
  /**
   * Weight on A's route (0 off it).
   */
  weightA: number;
  /**
   * Weight on B's route (0 off it).
   */
  weightB: number;
  /**
   * B minus A.
   */
  delta: number;
  /**
   * Share of the prediction the edge passes down on A's route.
   */
  shareA: number;
  /**
   * Share of the prediction the edge passes down on B's route.
   */
  shareB: number;
  /**
   * On A's route only, B's only, or both.
   */
  membership: DiffMembership;
}

/**
 * One stored top prediction.
 */
export interface DiffPredicted {
  /**
   * Token id (the same model: one vocabulary).
   */
  id: number;
  /**
   * Probability.
   */
  prob: number;
}

/**
 * One token's probability in A and B; null outside that trace's stored top k, where it is below belowA / belowB.
 */
export interface DiffTokenChange {
  /**
   * Token id (the same model: one vocabulary).
   */
  id: number;
  /**
   * Display string of the token (untrusted text).
   */
  text: string;
  /**
   * Probability in A; null outside A's stored top k.
   */
  probA: number | null;
  /**
   * Probability in B; null outside B's stored top k.
   */
  probB: number | null;
  /**
   * A's k-th stored probability.
   */
  belowA: number;
  /**
   * B's k-th stored probability.
   */
  belowB: number;
}

/**
 * Params of lmscope/status: none (an empty object; omitted params count as {}).
 */
export type StatusParams = Record<string, never>;

/**
 * Result of lmscope/status: what the daemon is and what it is doing.
 */
export interface StatusResult {
  /**
   * The lmscope Python package's version.
   */
  version: string;
  /**
   * The lmscope protocol the daemon speaks.
   */
  protocolVersion: "1";
  /**
   * idle: nothing running; loading: a model is loading; tracing: a trace is running.
   */
  state: "idle" | "loading" | "tracing";
  /**
   * The loaded model; null when none is loaded.
   */
  model: ModelInfo | null;
  /**
   * Traces waiting behind the running job.
   */
  queuedTraces: number;
  /**
   * Traces held in memory (handles) and the limits past which the least recently used are dropped.
   */
  traceCache: TraceCacheUse;
}

/**
 * Traces held in memory (handles) and the limits past which the least recently used are dropped.
 */
export interface TraceCacheUse {
  /**
   * Traces held.
   */
  count: number;
  /**
   * Approximate memory they take, in bytes.
   */
  bytes: number;
  /**
   * Most traces held at once.
   */
  maxCount: number;
  /**
   * Most memory they may take, in bytes.
   */
  maxBytes: number;
}

/**
 * Params of lmscope/loadModel: which model, and optionally its dtype and device. The new model replaces (and frees) the loaded one.
 */
export interface LoadModelParams {
  /**
   * "default" (the embedded model), a Hugging Face hub id, a local folder, a PEFT adapter folder (loaded over the base its adapter_config.json names) or a .gguf path.
   */
  spec: string;
  /**
   * A PEFT/LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to merge into the model spec names before tracing; the model's name then reads "base + adapter" and its contentHash is the merged model's. Absent: the model alone.
   */
  adapter?: string;
  /**
   * Type to load the weights in; absent: the daemon's choice for the model and device.
   */
  dtype?: Dtype;
  /**
   * Where to run the model.
   */
  device?: DeviceRequest;
  /**
   * Split the model over the GPUs, then CPU RAM, then disk with accelerate, by this plan; each layer is traced on the device that holds it. Overrides device. Not for .gguf files.
   */
  deviceMap?: "auto" | "balanced" | "balanced_low_0" | "sequential";
  /**
   * LSP work-done progress token: the daemon sends $/progress begin/report/end for this request under it (trace: one report per layer).
   */
  workDoneToken?: string | number;
}

/**
 * Result of lmscope/loadModel: the model now loaded.
 */
export interface LoadModelResult {
  /**
   * The model now loaded.
   */
  model: ModelInfo;
}

/**
 * Params of lmscope/trace: exactly one of `prompt` (the text), `document` (a range of an open document, read by the daemon) or `messages` (a conversation, traced through the model's chat template), plus options.
 */
export interface TraceParams {
  /**
   * The text to trace. Exactly one of prompt, document and messages.
   */
  prompt?: string;
  /**
   * A range of a document open in the editor: the daemon traces its text as the editor has it (unsaved changes included). Exactly one of prompt and document.
   */
  document?: DocumentRange;
  /**
   * A conversation to trace through the loaded model's chat template (apply_chat_template with the generation prompt added); the trace records which tokens the template added (extra "lmscope.chat"). A model without a chat template refuses it. Exactly one of prompt, document and messages.
   *
   * @minItems 1
   * @maxItems 1000
   *
   * Items: One message of the conversation.
   */
  messages?: [ChatMessage, ...ChatMessage[]];
  /**
   * Generate this many tokens after the prompt (greedy, or sampled with `seed`; fewer when the model ends its text), then trace prompt and generation in one pass; the trace records which tokens were generated (extra "lmscope.generation"). The prompt's tokens plus these must fit the model's context.
   *
   * @default 0
   */
  generate?: number;
  /**
   * Sample the generated tokens at temperature 1 with a random generator seeded so (the same seed gives the same tokens); absent: greedy (the most likely token each step).
   */
  seed?: number;
  /**
   * Prepend the model's beginning-of-sequence token (when it has one).
   *
   * @default true
   */
  prependBos?: boolean;
  /**
   * Smallest route threshold the trace will answer; lower keeps more edges and makes bigger traces.
   */
  minThreshold?: MinThreshold;
  /**
   * Which nodes' neuron lists and vocabulary projections the trace stores.
   */
  detail?: DetailScope;
  /**
   * Absolute path of a .lmtrace file to write (atomically) once the trace is done; absent: the trace is kept in memory only.
   */
  savePath?: string;
  /**
   * LSP work-done progress token: the daemon sends $/progress begin/report/end for this request under it (trace: one report per layer).
   */
  workDoneToken?: string | number;
}

/**
 * A range of a document open in the editor: the daemon traces its text as the editor has it (unsaved changes included). Exactly one of prompt and document.
 */
export interface DocumentRange {
  /**
   * The document's URI, as the editor names it.
   */
  uri: string;
  /**
   * The text to trace.
   */
  range: Range;
}

/**
 * One message of the conversation.
 */
export interface ChatMessage {
  /**
   * Who says it.
   */
  role: "system" | "user" | "assistant";
  /**
   * What the message says (the template places it).
   */
  content: string;
}

/**
 * Result of lmscope/trace: the new trace and whether it was saved.
 */
export interface TraceResult {
  /**
   * The new trace; its handle names it in later requests.
   */
  trace: TraceSummary;
  /**
   * True when savePath was given and the file was written (then trace.path is that path).
   */
  saved: boolean;
}

/**
 * Params of lmscope/openTrace: the .lmtrace file to open.
 */
export interface OpenTraceParams {
  /**
   * Path of the .lmtrace file (absolute, or relative to the daemon's working directory).
   */
  path: string;
}

/**
 * Result of lmscope/openTrace: the opened trace.
 */
export interface OpenTraceResult {
  /**
   * The opened trace (live is true only when the loaded model has the file's content hash).
   */
  trace: TraceSummary;
}

/**
 * Params of lmscope/closeTrace: the handle to forget.
 */
export interface CloseTraceParams {
  /**
   * The trace to forget.
   */
  handle: Handle;
}

/**
 * Result of lmscope/closeTrace.
 */
export interface CloseTraceResult {
  /**
   * True when the handle was held and is now forgotten; false when it was unknown (closing is idempotent).
   */
  closed: boolean;
}

/**
 * Params of lmscope/saveTrace: a trace held by the daemon and where to write it.
 */
export interface SaveTraceParams {
  /**
   * The trace to save (made by lmscope/trace or opened by lmscope/openTrace).
   */
  handle: Handle;
  /**
   * Absolute path of the .lmtrace file to write (atomically; an existing file there is replaced). Must end in .lmtrace and hold no '..' part.
   */
  path: string;
}

/**
 * Result of lmscope/saveTrace: where the trace now is.
 */
export interface SaveTraceResult {
  /**
   * The file written (the trace's handle now names this path).
   */
  path: string;
}

/**
 * Params of lmscope/route: which trace, which output token, at what threshold and in which mode.
 */
export interface RouteParams {
  /**
   * The trace.
   */
  handle: Handle;
  /**
   * Output token position whose prediction the route explains; negative values count from the end (-1: the last token).
   */
  token?: TokenPosition;
  /**
   * Edges carrying no more than this share of a node's input are dropped (tau). Must be >= the trace's minThreshold.
   */
  threshold: Threshold;
  /**
   * How contributions are thresholded.
   */
  mode?: ThresholdMode;
}

/**
 * Result of lmscope/route: the nodes and edges of one output token's route.
 */
export interface RouteResult {
  /**
   * The output token position, resolved (>= 0).
   */
  token: number;
  /**
   * The threshold used.
   */
  threshold: number;
  /**
   * The threshold mode used.
   */
  mode: ThresholdMode;
  /**
   * Every node on the route.
   *
   * Items: A node on the route.
   */
  nodes: RouteNode[];
  /**
   * Every edge on the route.
   *
   * Items: An edge on the route, from source to target node.
   */
  edges: RouteEdge[];
}

/**
 * A node on the route.
 */
export interface RouteNode {
  /**
   * The node.
   */
  id: NodeId;
  /**
   * Share of the output flowing through this node.
   */
  share: number;
}

/**
 * An edge on the route, from source to target node.
 */
export interface RouteEdge {
  /**
   * How information moves along the edge.
   */
  kind: EdgeKind;
  /**
   * The node information comes from.
   */
  source: NodeId;
  /**
   * The node it goes to.
   */
  target: NodeId;
  /**
   * The edge's contribution to the target, in this mode.
   */
  weight: number;
  /**
   * Attention edges: each head's weight in this mode, in head order; [] for other edges.
   */
  heads: number[];
}

/**
 * Params of lmscope/diff: two traces of the same model (handles from lmscope/openTrace or lmscope/trace), the output token of each, the threshold and mode, and how their positions align. Answered from the traces alone: no model is needed.
 */
export interface DiffParams {
  /**
   * Trace A, the reference.
   */
  handleA: Handle;
  /**
   * Trace B, compared with A (the same model: traces of different models are refused).
   */
  handleB: Handle;
  /**
   * A's output token whose route is compared; negative values count from the end.
   */
  tokenA?: TokenPosition;
  /**
   * B's output token; must be aligned to tokenA.
   */
  tokenB?: TokenPosition;
  /**
   * The threshold tau of both routes; must be >= both traces' minThreshold.
   */
  threshold?: Threshold;
  /**
   * How both routes are thresholded.
   */
  mode?: ThresholdMode;
  /**
   * Align the last K tokens of each trace. Without alignLast or pairs the traces must have as many tokens (then position i is position i); nothing is guessed.
   */
  alignLast?: number;
  /**
   * An explicit alignment: pairs [position in A, position in B], strictly increasing in both.
   *
   * @minItems 1
   */
  pairs?: [[number, number], ...[number, number][]];
}

/**
 * Result of lmscope/diff (docs/method.md, "Comparing two traces"): the union of both routes with each node's share of the prediction and each edge's weight in A and B and delta = B - A, the prediction change, and every head's, attention block's and FFN block's share in A and B.
 */
export interface DiffResult {
  /**
   * Display name of the model both traces were made with.
   */
  model: string;
  /**
   * A's prompt.
   */
  promptA: string;
  /**
   * B's prompt.
   */
  promptB: string;
  /**
   * Which positions of A and B are the same position.
   */
  alignment: {
    /**
     * identity: equal token counts, one to one; last: the last K tokens; pairs: given explicitly.
     */
    how: "identity" | "last" | "pairs";
    /**
     * [position in A, position in B], increasing.
     */
    pairs: [number, number][];
  };
  /**
   * A's output position, resolved.
   */
  tokenA: number;
  /**
   * B's output position, resolved.
   */
  tokenB: number;
  /**
   * The threshold of both routes.
   */
  threshold: number;
  /**
   * The threshold mode of both routes.
   */
  mode: ThresholdMode;
  /**
   * Every node of either route, by (kind, layer, positionA, positionB).
   */
  nodes: DiffNodeRow[];
  /**
   * Every edge of either route, by (target, source, kind).
   */
  edges: DiffEdgeRow[];
  /**
   * The top predictions after each output token, and every token of either list in both traces. A token outside a trace's stored top k has no probability there (null), only the bound: below that trace's k-th stored probability.
   */
  prediction: {
    /**
     * A's stored top predictions, most probable first.
     */
    topA: DiffPredicted[];
    /**
     * B's stored top predictions, most probable first.
     */
    topB: DiffPredicted[];
    /**
     * A's top tokens, then B's others.
     */
    tokens: DiffTokenChange[];
  };
  /**
   * Each component's share of the prediction on A's and on B's route (the cards' shares): headsX[layer][head], attentionX[layer], ffnX[layer].
   */
  shares: {
    /**
     * Per head, [layer][head]: share of the prediction on A's route.
     */
    headsA: number[][];
    /**
     * Per head, [layer][head]: share of the prediction on B's route.
     */
    headsB: number[][];
    /**
     * Per attention block, [layer]: share of the prediction on A's route.
     */
    attentionA: number[];
    /**
     * Per attention block, [layer]: share of the prediction on B's route.
     */
    attentionB: number[];
    /**
     * Per FFN block, [layer]: share of the prediction on A's route.
     */
    ffnA: number[];
    /**
     * Per FFN block, [layer]: share of the prediction on B's route.
     */
    ffnB: number[];
  };
}

/**
 * Params of lmscope/edgeHeads: one attention edge, source -> target at a layer.
 */
export interface EdgeHeadsParams {
  /**
   * The trace.
   */
  handle: Handle;
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Position attending; negative values count from the end.
   */
  target: number;
  /**
   * Position attended to (at most target); negative values count from the end.
   */
  source: number;
}

/**
 * Result of lmscope/edgeHeads: every head of the layer, strongest contribution first.
 */
export interface EdgeHeadsResult {
  /**
   * One entry per head (unthresholded), by contribution, largest first; equal contributions in head order.
   *
   * Items: One head's part in the edge.
   */
  heads: HeadContribution[];
}

/**
 * One head's part in the edge.
 */
export interface HeadContribution {
  /**
   * Head index, from 0.
   */
  head: number;
  /**
   * The head's contribution to the edge (proximity-based, unthresholded).
   */
  contribution: number;
  /**
   * The head's attention weight from target to source.
   */
  attention: number;
}

/**
 * Params of lmscope/ablate: components of a trace's model to ablate in one forward pass (docs/method.md, "Causal checks"). Needs the model that made the trace.
 */
export interface AblateParams {
  /**
   * The trace.
   */
  handle: Handle;
  /**
   * Ablation targets, written as L23H0 (a head everywhere), L23H0:14<-2 (one edge through one head), L23:14<-2 (an edge through every head), L5.ffn@14 / L5.ffn (an FFN node / the block everywhere), L5.N120@14 / L5.N120 (a neuron).
   *
   * @minItems 1
   * @maxItems 100000
   */
  targets: [string, ...string[]];
  /**
   * zero; mean (the component's mean over the prompt's positions); patch (its value on patchPrompt, of the same token count).
   *
   * @default "zero"
   */
  kind?: "zero" | "mean" | "patch";
  /**
   * Output position whose traced prediction is measured.
   */
  token?: TokenPosition;
  /**
   * kind patch: the prompt the values come from (tokenized like the trace).
   */
  patchPrompt?: string;
  /**
   * LSP work-done progress token: the daemon sends $/progress begin/report/end under it; the Cancel button of that progress cancels the check.
   */
  workDoneToken?: string | number;
}

/**
 * Result of lmscope/ablate: the traced prediction's log-probability before and after, and the new top tokens.
 */
export interface AblateResult {
  /**
   * The targets, canonical labels.
   */
  targets: string[];
  /**
   * The ablation kind.
   */
  kind: "zero" | "mean" | "patch";
  /**
   * Output position measured (non-negative).
   */
  position: number;
  /**
   * The traced prediction at that position.
   */
  token: string;
  /**
   * Its id.
   */
  tokenId: number;
  /**
   * log p(token) of the plain forward pass.
   */
  logprob: number;
  /**
   * log p(token) with the targets ablated.
   */
  ablatedLogprob: number;
  /**
   * ablatedLogprob − logprob.
   */
  deltaLogprob: number;
  /**
   * The most probable next tokens after the ablation, most probable first.
   *
   * Items: A next token and its probability.
   */
  top: TokenProb[];
}

/**
 * A next token and its probability.
 */
export interface TokenProb {
  /**
   * Display string.
   */
  token: string;
  /**
   * Token id.
   */
  id: number;
  /**
   * Probability after the ablation.
   */
  prob: number;
}

/**
 * Params of lmscope/verifyRoute: keep only the route at τ, ablate every other attention term (head, i←j) and FFN node, and compare p(prediction) with the full model and random sets of the same size. Needs the model.
 */
export interface VerifyRouteParams {
  /**
   * The trace.
   */
  handle: Handle;
  /**
   * Output position whose route is verified.
   */
  token?: TokenPosition;
  /**
   * The route's τ; 0 keeps everything.
   */
  threshold?: Threshold;
  /**
   * How the route is thresholded.
   */
  mode?: ThresholdMode;
  /**
   * How what is off the route is ablated.
   *
   * @default "zero"
   */
  kind?: "zero" | "mean";
  /**
   * Random sets of the baseline.
   *
   * @default 5
   */
  randomSets?: number;
  /**
   * Seed of the random sets (numpy default_rng).
   *
   * @default 0
   */
  seed?: number;
  /**
   * LSP work-done progress token: the daemon sends $/progress begin/report/end under it; the Cancel button of that progress cancels the check.
   */
  workDoneToken?: string | number;
}

/**
 * Result of lmscope/verifyRoute: the route's faithfulness (routeProb / fullProb) and its random baseline.
 */
export interface VerifyRouteResult {
  /**
   * τ of the route.
   */
  threshold: number;
  /**
   * The ablation kind.
   */
  kind: "zero" | "mean";
  /**
   * Output position (non-negative).
   */
  position: number;
  /**
   * The traced prediction.
   */
  token: string;
  /**
   * Its id.
   */
  tokenId: number;
  /**
   * p(token), full model.
   */
  fullProb: number;
  /**
   * p(token) with only the route kept.
   */
  routeProb: number;
  /**
   * routeProb / fullProb: the faithfulness figure.
   */
  kept: number;
  /**
   * Attention terms (layer, head, i←j) kept.
   */
  keptEdges: number;
  /**
   * Attention terms with j ≤ i ≤ position.
   */
  totalEdges: number;
  /**
   * FFN nodes kept.
   */
  keptFfn: number;
  /**
   * FFN nodes up to the position.
   */
  totalFfn: number;
  /**
   * p(token) for each random set.
   */
  randomProbs: number[];
  /**
   * The baseline: mean of randomProbs / fullProb.
   */
  randomKept: number;
  /**
   * The seed the random sets were drawn with.
   */
  seed: number;
}

/**
 * Params of lmscope/ffnNeurons: one FFN node and a page of its neurons.
 */
export interface FfnNeuronsParams {
  /**
   * The trace.
   */
  handle: Handle;
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Token position of the FFN node; negative values count from the end.
   */
  position: number;
  /**
   * Neurons to skip, strongest first.
   *
   * @default 0
   */
  offset?: number;
  /**
   * Most neurons to return.
   *
   * @default 50
   */
  limit?: number;
}

/**
 * Result of lmscope/ffnNeurons: one page of neurons, strongest contribution first.
 */
export interface FfnNeuronsResult {
  /**
   * Neurons in the FFN block (dFfn).
   */
  total: number;
  /**
   * Rank of the first neuron on this page.
   */
  offset: number;
  /**
   * Contribution of the FFN output's non-neuron part (biases).
   */
  rest: number;
  /**
   * This page, strongest contribution first.
   *
   * Items: One neuron's part in the FFN node.
   */
  neurons: NeuronContribution[];
}

/**
 * One neuron's part in the FFN node.
 */
export interface NeuronContribution {
  /**
   * Neuron index within the layer, from 0.
   */
  neuron: number;
  /**
   * The neuron's contribution to the FFN output.
   */
  contribution: number;
  /**
   * The neuron's activation (signed).
   */
  activation: number;
}

/**
 * Params of lmscope/ffnExperts: one FFN node of a sparse (mixture-of-experts) layer. Asked of a dense layer, or of a dense model, the request fails with LmscopeError "layer L has a dense FFN: it has no experts" (not an empty list: a dense FFN is not split into experts at all).
 */
export interface FfnExpertsParams {
  /**
   * The trace.
   */
  handle: Handle;
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Token position of the FFN node; negative values count from the end.
   */
  position: number;
}

/**
 * Result of lmscope/ffnExperts: the experts of one FFN node of a sparse layer (the k chosen routed experts and every shared expert), strongest contribution first (docs/method.md, "Experts"). From the file when it stores the node's row of extra["lmscope.experts"], else from the model (a saved trace opened without the model answers NeedsModel, as lmscope/ffnNeurons does).
 */
export interface FfnExpertsResult {
  /**
   * Experts at the node: topK + nShared.
   */
  total: number;
  /**
   * c_rest: the share of the node's input that is not the FFN update (the residual it adds to), at the expert step.
   */
  rest: number;
  /**
   * True: read from the trace file's experts table; false: computed now from the model (a live trace).
   */
  stored: boolean;
  /**
   * Strongest contribution first.
   *
   * Items: One expert's part in the FFN node.
   */
  experts: ExpertContribution[];
}

/**
 * One expert's part in the FFN node.
 */
export interface ExpertContribution {
  /**
   * The expert's slot: routed expert e is slot e, shared expert s is slot nExperts + s.
   */
  expert: number;
  /**
   * "E3" for routed expert 3, "S0" for shared expert 0 (the layer's prefix L5. is the client's).
   */
  label: string;
  /**
   * The router gate the forward pass multiplied the expert's output by, in [0, 1] (a shared expert: its sigmoid gate, or 1).
   */
  gate: number;
  /**
   * c_e: the expert's share of the node's input at the expert step, in [0, 1]; with `rest` the shares sum to 1.
   */
  contribution: number;
}

/**
 * Params of lmscope/projection: a node and which of its vectors to project onto the vocabulary.
 */
export interface ProjectionParams {
  /**
   * The trace.
   */
  handle: Handle;
  /**
   * The node to project.
   */
  node: NodeId;
  /**
   * lens: the residual stream at the node (logit lens); attention_update / ffn_update: what the block adds there.
   *
   * @default "lens"
   */
  kind?: ProjectionKind;
}

/**
 * lens: the residual stream at the node (logit lens); attention_update / ffn_update: what the block adds there.
 */
export type ProjectionKind = "lens" | "attention_update" | "ffn_update";

/**
 * Result of lmscope/projection: the tokens the vector raises most and lowers most.
 */
export interface ProjectionResult {
  /**
   * Highest logits first.
   *
   * Items: A token with a high logit and, for the lens, its rank one node earlier.
   */
  top: RankedLogit[];
  /**
   * Lowest logits first.
   *
   * Items: A token with a low logit.
   */
  bottom: TokenLogit[];
}

/**
 * A token with a high logit and, for the lens, its rank one node earlier.
 */
export interface RankedLogit {
  /**
   * The token as display text (untrusted: escape before rendering).
   */
  token: string;
  /**
   * Token id in the model's vocabulary.
   */
  id: number;
  /**
   * Its logit.
   */
  logit: number;
  /**
   * Its rank (0 = top) in the previous residual node's lens; null when there is none.
   */
  prevRank: number | null;
}

/**
 * A token with a low logit.
 */
export interface TokenLogit {
  /**
   * The token as display text (untrusted: escape before rendering).
   */
  token: string;
  /**
   * Token id in the model's vocabulary.
   */
  id: number;
  /**
   * Its logit.
   */
  logit: number;
}

/**
 * Params of lmscope/component: the component, and optionally a trace's route to place it in. token, threshold and mode need handle.
 */
export interface ComponentParams {
  /**
   * The head, neuron or block to describe.
   */
  component: ComponentRef;
  /**
   * A trace whose route gives the card its context; absent: no context.
   */
  handle?: Handle;
  /**
   * Output token of the route; negative values count from the end.
   */
  token?: TokenPosition;
  /**
   * Threshold of the route; absent: the default Threshold.
   */
  threshold?: Threshold;
  /**
   * Threshold mode of the route.
   */
  mode?: ThresholdMode;
}

/**
 * Result of lmscope/component: the component's card.
 */
export type ComponentResult = Card;

/**
 * Params of lmscope/headMaps: one attention head of a live trace, and the position whose output is projected.
 */
export interface HeadMapsParams {
  /**
   * The trace (it must be live: the maps need the model).
   */
  handle: Handle;
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Head index within the layer, from 0.
   */
  head: number;
  /**
   * Position whose head output gives the promoted/suppressed tokens (e.g. an edge's target); negative values count from the end.
   */
  position?: TokenPosition;
}

/**
 * Result of lmscope/headMaps: the head's attention map and contribution map over the prompt (causal, so row i holds sources 0..i), and the tokens its output at `position` promotes and suppresses.
 */
export interface HeadMapsResult {
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * Head index within the layer, from 0.
   */
  head: number;
  /**
   * The resolved position (>= 0) of promoted and suppressed.
   */
  position: number;
  /**
   * Attention probabilities A[head, i, j]: row i (target) has i + 1 entries, sources 0..i.
   */
  attention: [number, ...number[]][];
  /**
   * The head's unthresholded contribution to each edge j -> i at this layer (proximity-based), same shape as attention.
   */
  contribution: [number, ...number[]][];
  /**
   * Tokens the head's output at position raises most (direct logit attribution), strongest first; score = logit.
   */
  promoted: TokenScore[];
  /**
   * Tokens it lowers most, lowest logit first; score = logit.
   */
  suppressed: TokenScore[];
}

/**
 * Params of lmscope/run: a corpus run folder (`lmscope run PROMPTS --out runs/NAME/`), answered from its tables alone (no model, no re-tracing): the run's facts, one statistic for every head (layers x heads) and every FFN block (layers), and, with `component`, that head's or FFN block's statistics and top prompts.
 */
export interface RunParams {
  /**
   * Absolute path of the run folder, or of its run.json.
   */
  path: string;
  /**
   * What `heads` and `ffn` hold: `meanShare`, the component's mean share of the last token's prediction over the prompts (at the run's shareThreshold, renormalised); `onRoute`, the fraction of prompts whose route has it at `threshold`.
   *
   * @default "meanShare"
   */
  stat?: "meanShare" | "onRoute";
  /**
   * The route threshold tau of `onRoute`: one of the thresholds a run records.
   *
   * @default 0.04
   */
  threshold?: 0.01 | 0.04 | 0.1;
  /**
   * Only the prompts with this tag (one of the run's `tags`); absent: every prompt.
   */
  tag?: string;
  /**
   * A head or a whole FFN block whose statistics and top prompts to add (`component` of the result); absent: none. Told apart by `kind`.
   */
  component?: RunComponent;
}

/**
 * A head or a whole FFN block whose statistics and top prompts to add (`component` of the result); absent: none. Told apart by `kind`.
 */
export type RunComponent = RunHeadRef | RunFfnRef;

/**
 * An attention head.
 */
export interface RunHeadRef {
  /**
   * An attention head.
   */
  kind: "head";
  /**
   * Transformer block, from 0.
   */
  layer: number;
  /**
   * The head's index within the layer, from 0.
   */
  index: number;
}

/**
 * The whole FFN block of a layer.
 */
export interface RunFfnRef {
  /**
   * An FFN block.
   */
  kind: "ffn";
  /**
   * Transformer block, from 0.
   */
  layer: number;
}

/**
 * Result of lmscope/run: the run, the chosen statistic of every head and FFN block, and the asked component's statistics.
 */
export interface RunResult {
  /**
   * The run folder's facts (its run.json).
   */
  run: RunInfo;
  /**
   * What `heads` and `ffn` hold, as asked.
   */
  stat: "meanShare" | "onRoute";
  /**
   * The threshold tau of `onRoute`, as asked.
   */
  threshold: number;
  /**
   * The tag the prompts were filtered by; null: every prompt.
   */
  tag: string | null;
  /**
   * Prompts the statistics are over (the tag's, with `tag`).
   */
  nPrompts: number;
  /**
   * The statistic of head h of layer l at [l][h] (a share or a fraction, in [0, 1]).
   */
  heads: number[][];
  /**
   * The statistic of the FFN block of layer l at [l].
   */
  ffn: number[];
  /**
   * The asked component's statistics; null when none was asked.
   */
  component: RunComponentStats | null;
}

/**
 * The run folder's facts (its run.json).
 */
export interface RunInfo {
  /**
   * The run folder, absolute.
   */
  path: string;
  /**
   * The run's name (its folder's name; untrusted text).
   */
  name: string;
  /**
   * The model every trace of the run was made with.
   */
  model: TraceModelRef;
  /**
   * Transformer blocks of the model: rows of `heads` and `ffn`.
   */
  nLayers: number;
  /**
   * Heads per layer: columns of `heads`.
   */
  nHeads: number;
  /**
   * How far the run got.
   */
  counts: RunCounts;
  /**
   * Every tag of the run's prompts, sorted (untrusted text).
   */
  tags: string[];
  /**
   * The thresholds tau whose on-route flags the run records.
   */
  thresholds: number[];
  /**
   * The threshold tau the shares are computed at.
   */
  shareThreshold: number;
  /**
   * When the run last wrote run.json (ISO 8601).
   */
  updated: string;
}

/**
 * One head's or FFN block's statistics over the run's prompts (the tag's, with `tag`).
 */
export interface RunComponentStats {
  /**
   * The component, as asked.
   */
  component: RunComponent;
  /**
   * Prompts counted.
   */
  nPrompts: number;
  /**
   * Fraction of them whose route has it at tau 0.04 (the share threshold's route).
   */
  onRouteFraction: number;
  /**
   * Its mean share of the prediction.
   */
  meanShare: number;
  /**
   * The standard deviation of that share.
   */
  stdShare: number;
  /**
   * The prompts where it carries the most, largest share first (at most 10).
   *
   * Items: One prompt of the run and the component's share in it.
   */
  topPrompts: RunTopPrompt[];
}

/**
 * How far the run got.
 */
export interface RunCounts {
  /**
   * Valid prompts of the source file.
   */
  prompts: number;
  /**
   * Prompts traced (the ones the statistics are over).
   */
  done: number;
  /**
   * Prompts whose trace failed.
   */
  failed: number;
  /**
   * Lines of the source file that were not prompts.
   */
  skippedBadLines: number;
}

/**
 * One prompt of the run and the component's share in it.
 */
export interface RunTopPrompt {
  /**
   * Position among the source file's valid prompts, from 0.
   */
  index: number;
  /**
   * The prompt's id (the jsonl "id", or "line-N"; untrusted text).
   */
  id: string;
  /**
   * The component's share of the prediction in this prompt.
   */
  share: number;
  /**
   * The prompt's text (untrusted text).
   */
  text: string;
  /**
   * Its .lmtrace file, relative to the run folder.
   */
  trace: string;
}

/**
 * Params of lmscope/setActiveRun: the corpus run hover cards cite ("across run NAME: on the route in 73% of 200 prompts, mean share 4.1%"), or none.
 */
export interface SetActiveRunParams {
  /**
   * Absolute path of the run folder (or its run.json); null: cite no run.
   */
  path: string | null;
}

/**
 * Result of lmscope/setActiveRun: the run now cited, read and checked, or null.
 */
export interface SetActiveRunResult {
  /**
   * The cited run's name, folder and model; null: none.
   */
  run: ActiveRun | null;
}

/**
 * A run hover cards cite: only on cards of its model (same contentHash).
 */
export interface ActiveRun {
  /**
   * The run's name (untrusted text).
   */
  name: string;
  /**
   * The run folder, absolute.
   */
  path: string;
  /**
   * The run's model.
   */
  model: TraceModelRef;
}

/**
 * Params of the lmscope/modelChanged notification: the daemon's model state.
 */
export interface ModelChangedParams {
  /**
   * none: no model; loading: a load is running; ready: model is loaded; error: the last load failed (see message).
   */
  state: "none" | "loading" | "ready" | "error";
  /**
   * The loaded model (while loading or after an error: the one still loaded, if any); null when none.
   */
  model: ModelInfo | null;
  /**
   * Loading progress, when known.
   */
  percentage?: number;
  /**
   * What is happening or what went wrong, for the user.
   */
  message?: string;
}

/**
 * Params of the lmscope/traceChanged notification: a trace moved through the daemon's queue.
 */
export interface TraceChangedParams {
  /**
   * queued, started, then one of finished, failed or cancelled.
   */
  state: "queued" | "started" | "finished" | "failed" | "cancelled";
  /**
   * The JSON-RPC id of the lmscope/trace request, when the trace came from one.
   */
  requestId?: string | number;
  /**
   * The new trace's handle (finished only).
   */
  handle?: Handle;
  /**
   * What happened, for the user (failed: the error).
   */
  message?: string;
  /**
   * Traces still waiting after this change.
   */
  queuedTraces: number;
}

/**
 * What the editor sends as InitializeParams.initializationOptions, all optional: an LSP client that sends none (Neovim, Emacs, Helix, Zed) gets the daemon's defaults. protocolVersion is compared first: a mismatch refuses initialize with a message naming the side to update.
 */
export interface InitializationOptions {
  /**
   * The lmscope protocol the editor speaks; absent: the daemon's own. Any version string is well-formed here; the daemon refuses one that is not its own.
   */
  protocolVersion?: string;
  /**
   * Model spec to load at start (as lmscope/loadModel's spec); absent: load nothing until asked.
   */
  model?: string;
  /**
   * A PEFT/LoRA adapter folder to merge into that model (as lmscope/loadModel's adapter); absent: the model alone.
   */
  adapter?: string;
  /**
   * Type for that model's weights; absent: the daemon's choice.
   */
  dtype?: Dtype;
  /**
   * Where to run that model.
   */
  device?: DeviceRequest;
  /**
   * Split that model over the GPUs, then CPU RAM, then disk with accelerate, by this plan (as lmscope/loadModel's deviceMap); overrides device.
   */
  deviceMap?: "auto" | "balanced" | "balanced_low_0" | "sequential";
  /**
   * The shared secret of a daemon started with --tcp (LMSCOPE_TOKEN); compared in constant time before any other request is served. Ignored over stdio.
   */
  token?: string;
}

/** The lmscope protocol version; exchanged at initialize, a mismatch is refused. */
export const PROTOCOL_VERSION = "1";

/** Every lmscope method name (requests and notifications), keyed by its name without the prefix. */
export const Methods = {
  status: "lmscope/status",
  loadModel: "lmscope/loadModel",
  trace: "lmscope/trace",
  openTrace: "lmscope/openTrace",
  closeTrace: "lmscope/closeTrace",
  saveTrace: "lmscope/saveTrace",
  route: "lmscope/route",
  diff: "lmscope/diff",
  edgeHeads: "lmscope/edgeHeads",
  ablate: "lmscope/ablate",
  verifyRoute: "lmscope/verifyRoute",
  ffnNeurons: "lmscope/ffnNeurons",
  ffnExperts: "lmscope/ffnExperts",
  projection: "lmscope/projection",
  component: "lmscope/component",
  headMaps: "lmscope/headMaps",
  run: "lmscope/run",
  setActiveRun: "lmscope/setActiveRun",
  modelChanged: "lmscope/modelChanged",
  traceChanged: "lmscope/traceChanged",
} as const;

/** Params and result of every request (client -> server), keyed by method name. */
export interface RequestTypes {
  "lmscope/status": {params: StatusParams; result: StatusResult};
  "lmscope/loadModel": {params: LoadModelParams; result: LoadModelResult};
  "lmscope/trace": {params: TraceParams; result: TraceResult};
  "lmscope/openTrace": {params: OpenTraceParams; result: OpenTraceResult};
  "lmscope/closeTrace": {params: CloseTraceParams; result: CloseTraceResult};
  "lmscope/saveTrace": {params: SaveTraceParams; result: SaveTraceResult};
  "lmscope/route": {params: RouteParams; result: RouteResult};
  "lmscope/diff": {params: DiffParams; result: DiffResult};
  "lmscope/edgeHeads": {params: EdgeHeadsParams; result: EdgeHeadsResult};
  "lmscope/ablate": {params: AblateParams; result: AblateResult};
  "lmscope/verifyRoute": {params: VerifyRouteParams; result: VerifyRouteResult};
  "lmscope/ffnNeurons": {params: FfnNeuronsParams; result: FfnNeuronsResult};
  "lmscope/ffnExperts": {params: FfnExpertsParams; result: FfnExpertsResult};
  "lmscope/projection": {params: ProjectionParams; result: ProjectionResult};
  "lmscope/component": {params: ComponentParams; result: ComponentResult};
  "lmscope/headMaps": {params: HeadMapsParams; result: HeadMapsResult};
  "lmscope/run": {params: RunParams; result: RunResult};
  "lmscope/setActiveRun": {params: SetActiveRunParams; result: SetActiveRunResult};
}

/** Params of every notification (server -> client), keyed by method name. */
export interface NotificationTypes {
  "lmscope/modelChanged": ModelChangedParams;
  "lmscope/traceChanged": TraceChangedParams;
}

/** JSON-RPC error codes the daemon answers with. */
export const ErrorCodes = {
  InvalidRequest: -32600,
  InvalidParams: -32602,
  MethodNotFound: -32601,
  RequestCancelled: -32800,
  ModelError: -32001,
  PromptError: -32002,
  TraceFileError: -32003,
  NeedsModel: -32004,
  UnknownHandle: -32005,
  LmscopeError: -32006,
  OutOfMemory: -32007,
  Unauthorized: -32008,
} as const;

/**
 * The default of every shared definition that has one (common.schema.json `$defs`), by name:
 * the value used when nobody chose one. Read defaults here, never write them again.
 */
export const DEFAULTS = {
  ThresholdMode: "renormalize",
  Threshold: 0.04,
  MinThreshold: 0.01,
  DetailScope: "route",
  TokenPosition: -1,
  DeviceRequest: "cpu",
} as const satisfies {
  ThresholdMode: ThresholdMode;
  Threshold: Threshold;
  MinThreshold: MinThreshold;
  DetailScope: DetailScope;
  TokenPosition: TokenPosition;
  DeviceRequest: DeviceRequest;
};

/**
 * Per request, the defaults of its optional params: the daemon fills in exactly these when a
 * param is left out (a param's own `default`, else that of the definition it `$ref`s).
 */
export const PARAM_DEFAULTS = {
  "lmscope/status": {},
  "lmscope/loadModel": {device: "cpu"},
  "lmscope/trace": {generate: 0, prependBos: true, minThreshold: 0.01, detail: "route"},
  "lmscope/openTrace": {},
  "lmscope/closeTrace": {},
  "lmscope/saveTrace": {},
  "lmscope/route": {token: -1, mode: "renormalize"},
  "lmscope/diff": {tokenA: -1, tokenB: -1, threshold: 0.04, mode: "renormalize"},
  "lmscope/edgeHeads": {},
  "lmscope/ablate": {kind: "zero", token: -1},
  "lmscope/verifyRoute": {token: -1, threshold: 0.04, mode: "renormalize", kind: "zero", randomSets: 5, seed: 0},
  "lmscope/ffnNeurons": {offset: 0, limit: 50},
  "lmscope/ffnExperts": {},
  "lmscope/projection": {kind: "lens"},
  "lmscope/component": {token: -1, threshold: 0.04, mode: "renormalize"},
  "lmscope/headMaps": {position: -1},
  "lmscope/run": {stat: "meanShare", threshold: 0.04},
  "lmscope/setActiveRun": {},
} as const satisfies {[M in keyof RequestTypes]: Partial<RequestTypes[M]['params']>};
