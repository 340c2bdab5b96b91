// Chats and generations in the extension: the shared reader of `extra["lmscope.chat"]` and
// `extra["lmscope.generation"]` (twin of lmscope/chats.py), which tokens the graph marks as the
// template's, which outputs the output selector lists for generated tokens, and the count that
// "Trace Selection and Generate…" accepts.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {CHAT_KEY, chatOf, GENERATION_KEY, generatedOutputs, generationOf, isTemplateToken} from '../shared/traces/chat';
import {generateTokensSetting, MAX_GENERATE, parseGenerateCount} from '../host/settings';

// "<bos> user : when mary <bos> assistant :" then two generated tokens.
const CHAT = {
  messages: [{role: 'user', content: 'when mary'}],
  tokenMessage: [-1, -1, -1, 0, 0, -1, -1, -1, -1, -1],
  exact: true,
};
const GENERATION = {promptTokens: 8, generated: 2, requested: 4, seed: null, stoppedAtEos: true};

test('a chat trace marks the template tokens but neither the content nor the generation', () => {
  const extra = {[CHAT_KEY]: CHAT, [GENERATION_KEY]: GENERATION};
  const chat = chatOf(extra, 10);
  const generation = generationOf(extra, 10);
  assert.ok(chat !== null && generation !== null);
  const marked = Array.from({length: 10}, (_, i) => isTemplateToken(chat, generation, i));
  assert.deepEqual(marked, [true, true, true, false, false, true, true, true, false, false]);
  assert.equal(isTemplateToken(null, null, 0), false);
});

test('the generated tokens are listed as the routes of the positions that predicted them', () => {
  const generation = generationOf({[GENERATION_KEY]: GENERATION}, 10);
  assert.deepEqual(generatedOutputs(generation), [
    {index: 1, position: 8, predictedBy: 7},
    {index: 2, position: 9, predictedBy: 8},
  ]);
  assert.deepEqual(generatedOutputs(null), []);
});

test('a malformed or mismatched record reads as none', () => {
  assert.equal(chatOf({[CHAT_KEY]: CHAT}, 9), null); // one mask entry per token
  assert.equal(chatOf({[CHAT_KEY]: {...CHAT, tokenMessage: [...CHAT.tokenMessage.slice(1), 1]}}, 10), null);
  assert.equal(chatOf({[CHAT_KEY]: {...CHAT, messages: [{role: 'robot', content: 'x'}]}}, 10), null);
  assert.equal(chatOf({}, 10), null);
  assert.equal(generationOf({[GENERATION_KEY]: {...GENERATION, generated: 3}}, 10), null);
  assert.equal(generationOf({[GENERATION_KEY]: {...GENERATION, seed: -1}}, 10), null);
  assert.equal(generationOf({[GENERATION_KEY]: {...GENERATION, seed: 7}}, 10)?.seed, 7);
});

test('the generate count is a whole number up to the protocol maximum', () => {
  assert.equal(parseGenerateCount(' 5 '), 5);
  assert.equal(parseGenerateCount('0'), 0);
  assert.equal(parseGenerateCount('2.5'), 'a whole number of tokens, e.g. 5');
  assert.equal(parseGenerateCount('-1'), 'a whole number of tokens, e.g. 5');
  assert.equal(parseGenerateCount(String(MAX_GENERATE + 1)), `at most ${MAX_GENERATE} tokens`);
  assert.equal(generateTokensSetting(3), 3);
  assert.equal(generateTokensSetting(undefined), 0);
  assert.equal(generateTokensSetting(1.5), 0);
});
