// The Vercel AI SDK against the proxy, as its users write it: `openai(model)` (the Responses
// API) with a `system` prompt and the whole `messages` history resent every call, streamText
// read as it comes, a tool loop, previousResponseId, a conversation, and `openai.chat(model)`
// on Chat Completions with X-Chat-Id. The echo upstream answers `echo: <text> (<n> items)`,
// so each answer says how much history upstream was sent.
//
// Run by tests/python/test_vercel_ai.py against the function under cargo lambda, with
// PROXY_URL and PROXY_KEY set; `node --test` in this folder.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createOpenAI } from '@ai-sdk/openai';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const url = process.env.PROXY_URL;
const key = process.env.PROXY_KEY;
assert.ok(url && key, 'PROXY_URL and PROXY_KEY name the proxy and a caller key');

const openai = createOpenAI({ baseURL: `${url}/v1`, apiKey: key });
const model = openai('gpt-4o-mini');

async function proxy(path, init = {}) {
  const answer = await fetch(`${url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...init.headers },
  });
  const body = await answer.json();
  assert.equal(answer.status, 200, JSON.stringify(body));
  return body;
}

async function storedInput(responseId) {
  const listed = await proxy(`/v1/responses/${responseId}/input_items?order=asc&limit=100`);
  return listed.data;
}

test('generateText keeps a chat whose whole history is resent, earlier answers by reference', async () => {
  const system = 'Answer in one line.';
  const messages = [{ role: 'user', content: 'What is a quokka?' }];
  const first = await generateText({ model, system, messages });
  assert.equal(first.text, 'echo: What is a quokka? (2 items)');
  messages.push(...first.response.messages, { role: 'user', content: 'And a wombat?' });
  const second = await generateText({ model, system, messages });
  // The SDK sent the earlier answer as an item_reference (OpenAI, asked with store: false,
  // would refuse it, and so does the echo): the proxy put the stored item in its place.
  assert.equal(second.text, 'echo: And a wombat? (4 items)');
  messages.push(...second.response.messages, { role: 'user', content: 'Thanks' });
  const third = await generateText({ model, system, messages });
  assert.equal(third.text, 'echo: Thanks (6 items)');
  const id = third.providerMetadata.openai.responseId;
  assert.match(id, /^resp_/);
  const stored = await storedInput(id);
  assert.deepEqual(stored.map((item) => item.type), Array(6).fill('message'));
  assert.deepEqual(
    stored.filter((item) => item.role === 'assistant').map((item) => item.content[0].text),
    [first.text, second.text],
  );
});

test('streamText streams as it comes and goes on from previousResponseId', async () => {
  const started = performance.now();
  const result = streamText({ model, prompt: 'Tell me about kangaroos and their joeys' });
  const arrivals = [];
  let text = '';
  for await (const delta of result.textStream) {
    arrivals.push(performance.now() - started);
    text += delta;
  }
  assert.equal(text, 'echo: Tell me about kangaroos and their joeys (1 item)');
  assert.equal(await result.text, text);
  // The echo sends a word every 60 ms: the first came well before the last.
  assert.ok(arrivals.length >= 4, `${arrivals.length} deltas`);
  assert.ok(arrivals.at(-1) - arrivals[0] >= 150, `deltas at ${arrivals.map(Math.round)} ms`);
  const previousResponseId = (await result.providerMetadata).openai.responseId;
  const next = await generateText({
    model,
    prompt: 'And koalas?',
    providerOptions: { openai: { previousResponseId } },
  });
  // Only the new message was sent; the proxy sent upstream the whole chain.
  assert.equal(next.text, 'echo: And koalas? (3 items)');
});

test('a tool loop runs the tool and keeps the call and its output', async () => {
  const looked = [];
  const lookup = tool({
    description: 'Looks a word up in the dictionary',
    inputSchema: z.object({ word: z.string() }),
    execute: async ({ word }) => {
      looked.push(word);
      return `${word}: a small wallaby`;
    },
  });
  const result = await generateText({
    model,
    system: 'Use the dictionary.',
    prompt: 'quokka [call]',
    tools: { lookup },
    stopWhen: stepCountIs(3),
  });
  assert.deepEqual(looked, ['quokka [call]']);
  assert.equal(result.steps.length, 2);
  assert.equal(result.text, 'echo: quokka [call]: a small wallaby (4 items)');
  const stored = await storedInput(result.providerMetadata.openai.responseId);
  assert.deepEqual(
    stored.map((item) => item.type),
    ['message', 'message', 'function_call', 'function_call_output'],
  );
  assert.equal(stored[2].call_id, stored[3].call_id);
});

test('a conversation keeps the turns, and the seed routes show them', async () => {
  const conversation = await proxy('/v1/conversations', {
    method: 'POST',
    body: JSON.stringify({ metadata: { app: 'ai-sdk' } }),
  });
  const options = { openai: { conversation: conversation.id } };
  const first = await generateText({ model, prompt: 'Plan a trip', providerOptions: options });
  // The chat's prompt (the proxy's default system prompt) comes first.
  assert.equal(first.text, 'echo: Plan a trip (2 items)');
  const second = await generateText({ model, prompt: 'By train', providerOptions: options });
  assert.equal(second.text, 'echo: By train (4 items)');
  const transcript = await proxy(`/${conversation.id}/chat`);
  assert.deepEqual(
    transcript.map((message) => message.content),
    ['Plan a trip', first.text, 'By train', second.text],
  );
});

test('openai.chat keeps a chat by X-Chat-Id with the SDK resending its whole history', async () => {
  const chat = `ai-sdk-${Date.now()}`;
  const chatModel = openai.chat('gpt-4o-mini');
  const headers = { 'X-Chat-Id': chat };
  const system = 'You are terse.';
  const messages = [{ role: 'user', content: 'Hello' }];
  const first = await generateText({ model: chatModel, system, messages, headers });
  assert.match(first.text, /^echo: Hello \(\d+ messages\)$/);
  messages.push(...first.response.messages, { role: 'user', content: 'Again' });
  const second = await generateText({ model: chatModel, system, messages, headers });
  assert.match(second.text, /^echo: Again \(\d+ messages\)$/);
  // Stored once each, in order, with the SDK's system prompt as the chat's.
  const transcript = await proxy(`/${chat}/chat`);
  assert.deepEqual(
    transcript.map((message) => [message.role, message.content]),
    [['user', 'Hello'], ['assistant', first.text], ['user', 'Again'], ['assistant', second.text]],
  );
  const prompt = await proxy(`/${chat}/system`);
  assert.equal(prompt.content, system);
});
