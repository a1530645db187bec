// The playground: talk to a chat of the proxy that serves this page. Everything the API
// sends back is shown as text (textContent), never parsed as HTML.
"use strict";

// The API lives where this page does: behind API Gateway, the stage's URL.
const api = new URL(".", window.location.href);
const $ = (id) => document.getElementById(id);
const KEY = "chat-proxy-key"; // sessionStorage only: never a URL, a cookie or a log

const state = { chat: "", busy: false };

function showError(message) {
  const error = $("error");
  error.textContent = message;
  error.hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message;
}

function randomChatId() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return "chat-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A request to the API; a 401 asks for the caller's key. */
async function call(method, path, body, accept = "application/json") {
  const headers = { Accept: accept };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, api), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    $("key-row").hidden = false;
    if (!key) $("api-key").focus();
  }
  if (!response.ok) {
    throw new Error(await errorText(response));
  }
  return response;
}

/** The API's own message for a failed request. */
async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) {
    // Not JSON: fall back to the status.
  }
  return `The API answered ${response.status} ${response.statusText}`;
}

function chatPath(action) {
  return `${encodeURIComponent(state.chat)}/${action}`;
}

function message(role, text, extra) {
  const item = document.createElement("li");
  item.className = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const content = document.createElement("span");
  content.className = "content";
  content.textContent = text;
  item.append(who, content);
  if (extra) {
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = extra;
    item.append(meta);
  }
  $("messages").append(item);
  $("empty").hidden = true;
  return item;
}

function tokensText(tokens) {
  if (!tokens) return "";
  const cached = tokens.cached_tokens ? `, ${tokens.cached_tokens} cached` : "";
  return `${tokens.total_tokens} tokens (${tokens.prompt_tokens} prompt${cached}, ${tokens.completion_tokens} reply)`;
}

async function loadChat() {
  showError("");
  $("messages").replaceChildren();
  $("empty").hidden = false;
  if (!state.chat) return;
  try {
    const [history, chatPrompt, globalPrompt] = await Promise.all([
      call("GET", chatPath("chat")).then((r) => r.json()),
      call("GET", chatPath("system")).then((r) => r.json()),
      call("GET", "system").then((r) => r.json()),
    ]);
    for (const entry of history) {
      const images = entry.urls || (entry.url ? [entry.url] : []);
      message(entry.role, entry.content, images.map((url) => `image: ${url}`).join("\n"));
    }
    $("chat-prompt").value = chatPrompt.content;
    $("global-prompt").value = globalPrompt.content;
    await loadUsage();
  } catch (error) {
    showError(error.message);
  }
}

async function loadUsage() {
  try {
    const usage = await call("GET", chatPath("usage")).then((r) => r.json());
    $("usage").textContent =
      `This chat so far: ${usage.turns} turns, ${usage.total_tokens} tokens ` +
      `(${usage.prompt_tokens} prompt, ${usage.cached_tokens} cached, ${usage.completion_tokens} reply).`;
  } catch (_) {
    $("usage").textContent = "";
  }
}

function openChat(id) {
  state.chat = id.trim();
  $("chat-id").value = state.chat;
  const fragment = state.chat ? `#chat=${encodeURIComponent(state.chat)}` : "";
  if (window.location.hash !== fragment) {
    history.replaceState(null, "", fragment || window.location.pathname);
  }
  loadChat();
}

function chatFromFragment() {
  const match = /^#chat=(.*)$/.exec(window.location.hash);
  return match ? decodeURIComponent(match[1]) : "";
}

/** Reads server-sent events from a response, calling `onEvent(name, data)` for each. */
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

async function send() {
  const content = $("message").value;
  const url = $("image-url").value.trim();
  if (state.busy || !content.trim()) return;
  if (!state.chat) openChat(randomChatId());
  state.busy = true;
  $("send").disabled = true;
  showError("");
  setStatus("Waiting for the reply…");
  const asked = message("user", content, url ? `image: ${url}` : "");
  const reply = message("assistant", "");
  const text = reply.querySelector(".content");
  try {
    const body = url ? { content, url } : { content };
    const response = await call("POST", chatPath(url ? "img" : "chat"), body, "text/event-stream");
    $("message").value = "";
    $("image-url").value = "";
    await readEvents(response, (name, data) => {
      if (name === "delta") {
        text.textContent += data.content;
        setStatus("Writing…");
      } else if (name === "done") {
        text.textContent = data.content;
        const meta = document.createElement("span");
        meta.className = "meta";
        meta.textContent = tokensText(data.tokens) + (data.stored === false ? " (not stored)" : "");
        reply.append(meta);
      } else if (name === "error") {
        throw new Error(data.error.message);
      }
    });
    setStatus("");
    await loadUsage();
  } catch (error) {
    if (!text.textContent) {
      reply.remove();
      asked.remove();
    }
    setStatus("");
    showError(error.message);
  } finally {
    state.busy = false;
    $("send").disabled = false;
    $("message").focus();
  }
}

async function run(action, done) {
  showError("");
  try {
    await action();
    if (done) setStatus(done);
  } catch (error) {
    showError(error.message);
  }
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("open-chat").addEventListener("click", () => openChat($("chat-id").value));
  $("chat-id").addEventListener("keydown", (event) => {
    if (event.key === "Enter") openChat($("chat-id").value);
  });
  $("new-chat").addEventListener("click", () => openChat(randomChatId()));
  $("use-key").addEventListener("click", () => {
    sessionStorage.setItem(KEY, $("api-key").value.trim());
    $("api-key").value = "";
    $("key-row").hidden = true;
    loadChat();
  });
  $("clear").addEventListener("click", () =>
    run(async () => {
      await call("POST", chatPath("clear"), {});
      await loadChat();
    }, "The chat's messages are cleared; its prompt stays."),
  );
  $("save-chat-prompt").addEventListener("click", () =>
    run(() => call("POST", chatPath("system"), { content: $("chat-prompt").value }),
      "This chat's prompt is saved."),
  );
  $("save-global-prompt").addEventListener("click", () =>
    run(() => call("POST", "system", { content: $("global-prompt").value }),
      "The global prompt is saved."),
  );
  $("moderate").addEventListener("click", () =>
    run(async () => {
      const result = await call("POST", "mod", { content: $("message").value }).then((r) => r.json());
      const first = result.results[0];
      const flagged = Object.keys(first.categories).filter((c) => first.categories[c]);
      setStatus(first.flagged ? `Flagged: ${flagged.join(", ")}` : "Not flagged.");
    }),
  );
  window.addEventListener("hashchange", () => {
    const id = chatFromFragment();
    if (id !== state.chat) openChat(id);
  });
}

wire();
openChat(chatFromFragment());
