/**
 * The chat and the generation a trace records in `extra` (twin of lmscope/chats.py `chat_of`,
 * `generation_of`): which tokens the chat template added, and which tokens were generated, so
 * views can mark the template's tokens and list the generated ones as outputs.
 *
 * `extra["lmscope.chat"]`: {messages: [{role, content}], tokenMessage: [k or -1 per token],
 * exact}; `extra["lmscope.generation"]`: {promptTokens, generated, requested, seed,
 * stoppedAtEos}. The Python reader refuses a malformed value when it opens the file; here a
 * malformed or absent value reads as null (the views then show a plain trace).
 */

export const CHAT_KEY = 'lmscope.chat';
export const GENERATION_KEY = 'lmscope.generation';
/** What a view says of a token the chat template added (the title of its label). */
export const TEMPLATE_TOKEN_TITLE = 'added by the chat template';
/** tokenMessage of a token the chat template added. */
export const TEMPLATE = -1;
const ROLES = new Set(['system', 'user', 'assistant']);

export interface ChatMessage {
  readonly role: string;
  readonly content: string;
}

export interface ChatRecord {
  readonly messages: readonly ChatMessage[];
  /** Per token: the message whose content it holds characters of, or TEMPLATE. */
  readonly tokenMessage: readonly number[];
  /** False: the mask was approximated by decoding (the Python side says why). */
  readonly exact: boolean;
}

export interface GenerationRecord {
  readonly promptTokens: number;
  readonly generated: number;
  readonly requested: number;
  readonly seed: number | null;
  readonly stoppedAtEos: boolean;
}

/** One generated token as an output to choose: generated token `index` (1-based, as shown)
 * sits at `position` and was predicted by the output of `predictedBy` (= position - 1). */
export interface GeneratedOutput {
  readonly index: number;
  readonly position: number;
  readonly predictedBy: number;
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && value >= 0;

/** The chat of a trace of `nTokens` tokens, or null (none, or malformed). */
export function chatOf(extra: Readonly<Record<string, unknown>>, nTokens: number): ChatRecord | null {
  const value = extra[CHAT_KEY];
  if (!isRecord(value) || !Array.isArray(value['messages']) || !Array.isArray(value['tokenMessage'])) return null;
  if (typeof value['exact'] !== 'boolean') return null;
  const messages: ChatMessage[] = [];
  for (const message of value['messages'] as unknown[]) {
    if (!isRecord(message) || typeof message['role'] !== 'string' || typeof message['content'] !== 'string' || !ROLES.has(message['role'])) return null;
    messages.push({role: message['role'], content: message['content']});
  }
  const tokenMessage = value['tokenMessage'] as unknown[];
  if (messages.length === 0 || tokenMessage.length !== nTokens) return null;
  if (!tokenMessage.every((k) => typeof k === 'number' && Number.isInteger(k) && k >= TEMPLATE && k < messages.length)) return null;
  return {messages, tokenMessage: tokenMessage as number[], exact: value['exact']};
}

/** The generation of a trace of `nTokens` tokens, or null (none, or malformed). */
export function generationOf(extra: Readonly<Record<string, unknown>>, nTokens: number): GenerationRecord | null {
  const value = extra[GENERATION_KEY];
  if (!isRecord(value)) return null;
  const {promptTokens, generated, requested, seed, stoppedAtEos} = value;
  if (!isCount(promptTokens) || !isCount(generated) || !isCount(requested) || typeof stoppedAtEos !== 'boolean') return null;
  if (promptTokens < 1 || promptTokens + generated !== nTokens || generated > requested) return null;
  if (seed !== null && !isCount(seed)) return null;
  return {promptTokens, generated, requested, seed, stoppedAtEos};
}

/** The generated tokens as outputs: the route of `predictedBy` is the one that chose each. */
export function generatedOutputs(generation: GenerationRecord | null): GeneratedOutput[] {
  if (generation === null) return [];
  return Array.from({length: generation.generated}, (_, k) => ({
    index: k + 1,
    position: generation.promptTokens + k,
    predictedBy: generation.promptTokens + k - 1,
  }));
}

/** Whether the token at `position` was added by the chat template (false without a chat, and
 * for generated tokens, which lie in no message either). */
export function isTemplateToken(chat: ChatRecord | null, generation: GenerationRecord | null, position: number): boolean {
  if (chat === null || chat.tokenMessage[position] !== TEMPLATE) return false;
  return generation === null || position < generation.promptTokens;
}
