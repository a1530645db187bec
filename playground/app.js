// The playground: a chat app over the proxy that serves this page. The caller's chats are
// the proxy's (`GET /chats`), each opened by its id in the URL fragment. What a user wrote
// is shown as text; an answer is Markdown, rendered by markdown-it with raw HTML and images
// off, then passed through DOMPurify, and only then put in the page (both vendored in
// playground/vendor/).
"use strict";

// The API lives where this page does: behind API Gateway, the stage's URL.
const api = new URL(".", window.location.href);
const $ = (id) => document.getElementById(id);
const KEY = "chat-proxy-key"; // sessionStorage only: never a URL, a cookie or a log
const PAGE = 30; // chats per page of the sidebar
const MODEL = "chat-proxy-model:"; // localStorage: the model picked for each chat

const state = {
  chat: "",
  // The chat's transcript as the page shows it: {role, content, urls}.
  messages: [],
  // The stream being read, to stop.
  streaming: null,
  chats: [],
  next: null,
  // How many times the sidebar, the usage and a search were asked for: Send comes back
  // before they are (and a search is asked as one types), so several may be under way and
  // only the newest answer is shown.
  asked: { chats: 0, usage: 0, search: 0 },
  // The search shown: its words and where the next page starts.
  search: { q: "", next: null, hits: [] },
  // The message a search hit opens its chat at.
  at: null,
  // A shared chat's snapshot is shown, read-only (`#shared=<token>`).
  readOnly: false,
  // The chat shown is temporary: kept this many seconds after its last message (the
  // proxy's `X-Chat-Temporary`), never listed or searched; 0 when it is not.
  temporary: 0,
  // The new chat shown is to be temporary (its toggle is on).
  offRecord: false,
  // A temporary chat being made for the first message.
  making: false,
};

// ---- Markdown, made safe -------------------------------------------------------------

const SAFE_LINK = /^(https?:|mailto:)/i;
const markdown = window.markdownit({
  html: false,
  linkify: true,
  breaks: true,
  // A fenced block in a language highlight.js knows, its tokens marked; any other is left
  // for markdown-it to escape.
  highlight: (code, lang) => {
    if (!lang || !window.hljs || !window.hljs.getLanguage(lang)) return "";
    return window.hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
  },
});
markdown.disable(["image"]);
markdown.validateLink = (url) => SAFE_LINK.test(url.trim());

const PURIFY = {
  ALLOWED_TAGS: ["p", "br", "strong", "em", "s", "del", "a", "code", "pre", "ul", "ol", "li",
    "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr",
    "th", "td", "span"],
  ALLOWED_ATTR: ["href", "title", "start", "class"],
  ALLOW_DATA_ATTR: false,
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};
// The only classes kept: a code block's language (`language-python`) and highlight.js's
// token classes (`hljs-keyword`, `hljs-title function_`), which its theme colours.
const SAFE_CLASS = /^(?:(?:hljs-[\w-]+|[a-z]+_|language-[\w+#.-]+)(?: |$))+$/;
window.DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName !== "class") return;
  const tag = node.tagName;
  if (!((tag === "SPAN" || tag === "CODE") && SAFE_CLASS.test(data.attrValue))) {
    data.keepAttr = false;
  }
});
window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/**
 * An answer's Markdown as page nodes: rendered, sanitized, each code block under a header
 * with its language's name and its Copy button.
 */
function renderMarkdown(text) {
  const fragment = window.DOMPurify.sanitize(markdown.render(text), PURIFY);
  for (const pre of fragment.querySelectorAll("pre")) {
    const block = document.createElement("div");
    block.className = "code";
    pre.replaceWith(block);
    const code = pre.querySelector("code");
    const language = /(?:^| )language-([\w+#.-]+)/.exec(code ? code.className : "");
    const head = document.createElement("div");
    head.className = "code-head";
    const name = document.createElement("span");
    name.className = "code-lang";
    name.textContent = language ? language[1] : "";
    const copy = button("Copy code", "copy-code", () => copyText(pre.textContent, copy));
    head.append(name, copy);
    block.append(head, pre);
  }
  return fragment;
}

// ---- The API ---------------------------------------------------------------------------

/** A request to the API; a 401 asks for the caller's key. */
async function call(method, path, body, { accept = "application/json", signal } = {}) {
  const headers = { Accept: accept };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, api), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (response.status === 401) {
    $("key-row").hidden = false;
    if (!key) $("api-key").focus();
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

const json = (response) => response.json();

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

function chatPath(action, chat = state.chat) {
  return `${encodeURIComponent(chat)}/${action}`;
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

// ---- Small pieces of page ---------------------------------------------------------------

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message;
}

function button(label, className, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

// Icons as SVG paths (24 by 24, drawn with the text's colour): built as nodes, so the
// page's Content-Security-Policy needs nothing inline.
const ICONS = {
  copy: "M9 9h10v10H9zM5 15V5h10",
  done: "M5 12.5l4.5 4.5L19 7.5",
  edit: "M4 20h4L19 9l-4-4L4 16zM13.5 6.5l4 4",
  regenerate: "M20 12a8 8 0 1 1-2.34-5.66M20 4v5h-5",
  rename: "M4 20h4L19 9l-4-4L4 16zM13.5 6.5l4 4",
  delete: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13",
  down: "M12 5v14M6 13l6 6 6-6",
  plus: "M12 5v14M5 12h14",
  settings: "M4 7h10M18 7h2M4 17h2M10 17h10M14 5v4M8 15v4",
  // A speech bubble drawn in dashes: a chat that leaves no trace.
  temporary: "M8 19l-3 2v-4M4 14v-2M4 9V7a2 2 0 0 1 2-2h2M11 5h2M16 5h2a2 2 0 0 1 2 2v2M20 12v2M20 17a2 2 0 0 1-2 2h-2M13 19h-2",
};
const SVG = "http://www.w3.org/2000/svg";

function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

/** A button that shows an icon, named by `label` for screen readers and as its tooltip. */
function iconButton(name, label, className, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = `icon ${className}`;
  element.setAttribute("aria-label", label);
  element.title = label;
  element.append(icon(name));
  element.addEventListener("click", onClick);
  return element;
}

async function copyText(text, from) {
  try {
    await navigator.clipboard.writeText(text);
    if (from.classList.contains("icon")) {
      const label = from.getAttribute("aria-label");
      from.setAttribute("aria-label", "Copied");
      from.title = "Copied";
      from.replaceChildren(icon("done"));
      setTimeout(() => {
        from.setAttribute("aria-label", label);
        from.title = label;
        from.replaceChildren(icon("copy"));
      }, 1500);
      return;
    }
    const label = from.textContent;
    from.textContent = "Copied";
    setTimeout(() => (from.textContent = label), 1500);
  } catch (error) {
    showError(`Could not copy: ${error.message}`);
  }
}

function randomChatId() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return "chat-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function tokensText(tokens) {
  if (!tokens) return "";
  const cached = tokens.cached_tokens ? `, ${tokens.cached_tokens} cached` : "";
  return `${tokens.total_tokens} tokens (${tokens.prompt_tokens} prompt${cached}, ${tokens.completion_tokens} reply)`;
}

function when(seconds) {
  const ago = Date.now() / 1000 - seconds;
  if (ago < 60) return "just now";
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  const date = new Date(seconds * 1000);
  if (ago < 86400) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toLocaleDateString([], { day: "numeric", month: "short" });
}

// ---- The conversation -------------------------------------------------------------------

/** Whether the reader is at the newest message (or near enough). */
function atBottom() {
  const view = $("conversation");
  return view.scrollHeight - view.scrollTop - view.clientHeight < 60;
}

/** Keeps the newest message in view while it grows, unless the reader scrolled up. */
function follow(change) {
  const view = $("conversation");
  const was = atBottom();
  change();
  if (was) view.scrollTop = view.scrollHeight;
  showToBottom();
}

/** The button back to the newest message, shown while the reader has scrolled up. */
function showToBottom() {
  $("to-bottom").hidden = atBottom();
}

/** One message of the transcript, with its actions; `index` is its place in it. */
function messageItem(entry, index) {
  const item = document.createElement("li");
  item.className = entry.role === "user" ? "user" : "assistant";
  item.dataset.index = String(index);
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = entry.role === "user" ? "You" : "Assistant";
  const content = document.createElement("div");
  content.className = "content";
  const meta = document.createElement("div");
  meta.className = "meta";
  const images = (entry.urls || []).map((url) => `image: ${url}`);
  meta.textContent = images.concat(entry.meta ? [entry.meta] : []).join("\n");
  const actions = document.createElement("div");
  actions.className = "actions";
  if (state.readOnly) {
    item.append(who, content, meta);
    showContent(item, entry);
    return item;
  }
  const copy = iconButton("copy", "Copy", "copy", () => copyText(entry.content, copy));
  actions.append(copy);
  if (entry.role === "user") {
    actions.append(iconButton("edit", "Edit", "edit", () => startEdit(item, entry, index)));
  }
  item.append(who, content, meta, actions);
  showContent(item, entry);
  return item;
}

function showContent(item, entry) {
  const content = item.querySelector(".content");
  if (entry.role === "user") content.textContent = entry.content;
  else content.replaceChildren(renderMarkdown(entry.content));
}

/** Shows the transcript; the newest answer can be regenerated. */
function showMessages() {
  const list = $("messages");
  list.replaceChildren(...state.messages.map(messageItem));
  $("empty").hidden = state.messages.length > 0;
  // A link would keep a temporary chat past its expiry: it has no Share.
  $("share").hidden = state.readOnly || state.messages.length === 0 || Boolean(state.temporary);
  const last = list.lastElementChild;
  if (!state.readOnly && last && last.classList.contains("assistant")) {
    last.querySelector(".actions").append(
      iconButton("regenerate", "Regenerate", "regenerate", regenerate));
  }
  showTemporary();
}

async function loadChat() {
  showError("");
  state.messages = [];
  state.temporary = 0;
  showMessages();
  showTitle();
  showTemporary();
  if (!state.chat) return;
  const chat = state.chat;
  try {
    const [read, chatPrompt, globalPrompt] = await Promise.all([
      call("GET", `${chatPath("chat")}?tokens=true`),
      call("GET", chatPath("system")).then(json),
      call("GET", "system").then(json),
    ]);
    const history = await read.json();
    if (chat !== state.chat) return;
    state.temporary = Number(read.headers.get("X-Chat-Temporary")) || 0;
    showTemporary();
    state.messages = history.map((entry) => ({
      role: entry.role,
      content: entry.content,
      urls: entry.urls || (entry.url ? [entry.url] : []),
      // Each answer's usage, as it was shown when the answer came.
      meta: entry.tokens ? tokensText(entry.tokens) : undefined,
    }));
    follow(showMessages);
    $("conversation").scrollTop = $("conversation").scrollHeight;
    showToBottom();
    $("chat-prompt").value = chatPrompt.content;
    $("global-prompt").value = globalPrompt.content;
    if (state.at !== null) showFound(state.at);
    // A turn being written (the page was reloaded mid-answer): followed where it is.
    if (read.headers.get("X-Chat-Live") && !state.streaming) followLive();
    await loadUsage();
  } catch (error) {
    showError(error.message);
  }
}

async function loadUsage() {
  try {
    const asked = ++state.asked.usage;
    const usage = await call("GET", chatPath("usage")).then(json);
    if (asked !== state.asked.usage) return;
    $("usage").textContent =
      `This chat so far: ${usage.turns} turns, ${usage.total_tokens} tokens ` +
      `(${usage.prompt_tokens} prompt, ${usage.cached_tokens} cached, ${usage.completion_tokens} reply).`;
  } catch (_) {
    $("usage").textContent = "";
  }
}

function openChat(id, at = null) {
  detach();
  state.at = at;
  // Each chat opened starts kept: a temporary one is asked for each time.
  state.offRecord = false;
  showModel(id.trim());
  state.chat = id.trim();
  $("chat-id").value = state.chat;
  const fragment = state.chat ? `#chat=${encodeURIComponent(state.chat)}` : "";
  if (window.location.hash !== fragment) {
    history.replaceState(null, "", fragment || window.location.pathname);
  }
  closeSidebar();
  markCurrent();
  loadChat();
}

function chatFromFragment() {
  const match = /^#chat=(.*)$/.exec(window.location.hash);
  return match ? decodeURIComponent(match[1]) : "";
}

/** While a reply streams, Send is Stop. */
function setStreaming(stream) {
  state.streaming = stream;
  const send = $("send");
  send.textContent = stream ? "Stop" : "Send";
  send.classList.toggle("stop", Boolean(stream));
  document.body.classList.toggle("streaming", Boolean(stream));
}

/**
 * Stops the answer being written: the proxy ends the turn at its next chunk and keeps what
 * it wrote as the answer, and the stream being read ends with it. A turn the proxy does
 * not name yet (Stop at once after Send) is asked again; a proxy that cannot take the
 * stop while it streams (one local instance) is left writing, and the page stops reading.
 */
async function stop() {
  const streaming = state.streaming;
  if (!streaming || streaming.stopping) return;
  streaming.stopping = true;
  setStatus("Stopping…");
  const leave = () => {
    if (state.streaming === streaming) streaming.controller.abort();
  };
  const giveUp = setTimeout(leave, 2000);
  for (let tries = 0; tries < 3; tries++) {
    try {
      await call("POST", chatPath("stop", streaming.chat), {});
      return;
    } catch (_) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      if (state.streaming !== streaming) return;
    }
  }
  clearTimeout(giveUp);
  leave();
}

/** Stops reading the answer being written, which the proxy goes on writing and keeps. */
function detach() {
  if (state.streaming) state.streaming.controller.abort();
}

/**
 * Shows an answer as it streams, after the messages `kept` of the transcript and the
 * question `asked` (shown first): `open(signal)` asks for the stream (a new turn, a
 * regenerate, an edit, or a turn in progress followed again), and `reply` holds what was
 * written before it, if any.
 */
async function streamAnswer(open, kept, asked, reply = { role: "assistant", content: "" }) {
  if (state.streaming) return;
  const streaming = { controller: new AbortController(), chat: state.chat, stopping: false };
  setStreaming(streaming);
  showError("");
  setStatus(reply.content ? "Writing…" : "Waiting for the reply…");
  const before = state.messages;
  state.messages = kept.concat(asked ? [asked] : []);
  follow(() => {
    showMessages();
    $("messages").append(messageItem(reply, state.messages.length));
  });
  const item = $("messages").lastElementChild;
  let pending = false;
  const render = () => {
    pending = false;
    follow(() => showContent(item, reply));
  };
  try {
    const response = await open(streaming.controller.signal);
    await readEvents(response, (name, data) => {
      if (name === "delta") {
        reply.content += data.content;
        if (!streaming.stopping) setStatus("Writing…");
        if (!pending) {
          pending = true;
          requestAnimationFrame(render);
        }
      } else if (name === "done") {
        reply.content = data.content;
        reply.meta = (data.stopped ? "Stopped. " : "") + tokensText(data.tokens) +
          (data.stored === false ? " (not stored)" : "");
      } else if (name === "error") {
        throw new Error(data.error.message);
      }
    });
    state.messages.push(reply);
    follow(showMessages);
    setStatus("");
    // The answer is whole: Send is back at once, not after the usage and the sidebar.
    setStreaming(null);
    $("message").focus();
    await Promise.all([loadUsage(), loadChats()]);
  } catch (error) {
    const left = streaming.controller.signal.aborted;
    if (left && state.chat !== streaming.chat) return; // another chat is shown now
    if (reply.content) {
      reply.meta = left
        ? "No longer following: the proxy goes on writing and keeps the answer; open the chat again to see it."
        : "The answer was cut short.";
      state.messages.push(reply);
      follow(showMessages);
    } else {
      // Nothing came: the page shows the chat as it was.
      state.messages = before;
      showMessages();
    }
    setStatus("");
    if (!left) showError(error.message);
  } finally {
    if (state.streaming === streaming) setStreaming(null);
    $("message").focus();
  }
}

/** A turn asked now, of the model picked for the chat: its answer streamed. */
function askAndStream(path, body, kept, asked) {
  const model = $("model").value;
  const asking = { ...body, stream: true, ...(model ? { model } : {}) };
  const open = (signal) => call("POST", chatPath(path), asking, {
    accept: "text/event-stream",
    signal,
  });
  return streamAnswer(open, kept, asked);
}

/**
 * The chat's turn in progress (the page was reloaded, or the chat opened, while it was
 * being written): shown as it stands, then followed from there until it ends.
 */
async function followLive() {
  const chat = state.chat;
  let live;
  try {
    live = await call("GET", chatPath("live")).then(json);
  } catch (_) {
    return; // ended meanwhile: the transcript holds it
  }
  if (chat !== state.chat || state.streaming) return;
  const messages = state.messages;
  const asked = live.asked || {};
  let kept = messages;
  let question = { role: "user", content: asked.content || "", urls: asked.url ? [asked.url] : [] };
  if (asked.route === "regenerate") {
    kept = messages.slice(0, -2);
    question = messages[messages.length - 2];
  } else if (asked.route === "edit") {
    kept = messages.slice(0, asked.index);
    question = { ...messages[asked.index], content: asked.content };
  }
  const open = async (signal) => {
    try {
      return await call("GET", `${chatPath("live")}?stream=true&after=${live.position}`, undefined, {
        accept: "text/event-stream",
        signal,
      });
    } catch (error) {
      if (signal.aborted) throw error;
      // Ended between the two reads: the transcript holds it now.
      setTimeout(loadChat, 0);
      throw error;
    }
  };
  await streamAnswer(open, kept, question, { role: "assistant", content: live.content });
}

async function send() {
  const content = $("message").value;
  const url = $("image-url").value.trim();
  if (state.streaming || state.making || !content.trim()) return;
  if (!state.chat) openChat(randomChatId());
  if (!(await madeTemporary()) || !(await temporaryAlive().catch(() => true))) return;
  $("message").value = "";
  $("image-url").value = "";
  fitMessage();
  toggleExtras(false);
  const asked = { role: "user", content, urls: url ? [url] : [] };
  askAndStream(url ? "img" : "chat", url ? { content, url } : { content }, state.messages, asked);
}

function regenerate() {
  const kept = state.messages.slice(0, -1);
  askAndStream("regenerate", {}, kept.slice(0, -1), kept[kept.length - 1]);
}

/** A user message, edited in place; saved, it is asked again and what followed goes. */
function startEdit(item, entry, index) {
  if (state.streaming) return;
  const content = item.querySelector(".content");
  const field = document.createElement("textarea");
  field.className = "edit-field";
  field.value = entry.content;
  field.rows = Math.min(8, entry.content.split("\n").length + 1);
  field.setAttribute("aria-label", "Edit your message");
  const save = button("Save and ask again", "save-edit", () => {
    const text = field.value;
    if (!text.trim()) return;
    const asked = { ...entry, content: text };
    askAndStream("edit", { index, content: text }, state.messages.slice(0, index), asked);
  });
  const cancel = button("Cancel", "secondary cancel-edit", () => showMessages());
  field.addEventListener("keydown", (event) => {
    if (event.key === "Escape") showMessages();
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      save.click();
    }
  });
  const row = document.createElement("div");
  row.className = "row";
  row.append(save, cancel);
  content.replaceChildren(field, row);
  item.querySelector(".actions").hidden = true;
  field.focus();
}

function showTitle() {
  const listed = state.chats.find((chat) => chat.id === state.chat);
  // A chat not listed yet is a new one: its id is the proxy's business, not a title. A
  // temporary chat is never listed.
  const unlisted = state.temporary ? "Temporary chat" : "New chat";
  const title = listed ? listed.title || listed.id : unlisted;
  $("title").textContent = title;
  document.title = `${title} · chat-proxy playground`;
}

/** Scrolls to the message a search found, and marks it for a moment. */
function showFound(index) {
  state.at = null;
  const item = $("messages").querySelector(`li[data-index="${Number(index)}"]`);
  if (!item) return;
  item.scrollIntoView({ block: "center" });
  item.classList.add("found");
  setTimeout(() => item.classList.remove("found"), 2500);
  showToBottom();
}

// ---- The sidebar: the caller's chats ----------------------------------------------------

async function loadChats(more = false) {
  try {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (more && state.next) query.set("after", state.next);
    const asked = ++state.asked.chats;
    const page = await call("GET", `chats?${query}`).then(json);
    if (asked !== state.asked.chats) return;
    state.chats = more ? state.chats.concat(page.chats) : page.chats;
    state.next = page.has_more ? page.next : null;
    showChats();
  } catch (error) {
    showError(error.message);
  }
}

/** The day `seconds` falls on, at local midnight, as milliseconds. */
function dayOf(seconds) {
  const date = new Date(seconds * 1000);
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

/**
 * Chats by when they were last written, as chat apps list them: Today, Yesterday, Previous
 * 7 days, Previous 30 days, then one group a month (newest first, as the list is).
 */
function chatGroups(chats, now = Date.now() / 1000) {
  const today = dayOf(now);
  const days = (seconds) => Math.round((today - dayOf(seconds)) / 86400000);
  const groups = [];
  for (const chat of chats) {
    const ago = days(chat.updated_at);
    let label;
    if (ago <= 0) label = "Today";
    else if (ago === 1) label = "Yesterday";
    else if (ago <= 7) label = "Previous 7 days";
    else if (ago <= 30) label = "Previous 30 days";
    else {
      const date = new Date(chat.updated_at * 1000);
      const sameYear = date.getFullYear() === new Date(now * 1000).getFullYear();
      label = date.toLocaleDateString([], sameYear ? { month: "long" } : { month: "long", year: "numeric" });
    }
    const last = groups[groups.length - 1];
    if (last && last.label === label) last.chats.push(chat);
    else groups.push({ label, chats: [chat] });
  }
  return groups;
}

function showChats() {
  $("chats").replaceChildren(...chatGroups(state.chats).map((group) => {
    const item = document.createElement("li");
    item.className = "group";
    const heading = document.createElement("h2");
    heading.textContent = group.label;
    const list = document.createElement("ol");
    list.append(...group.chats.map(chatItem));
    item.append(heading, list);
    return item;
  }));
  const searching = $("search").value.trim() !== "";
  $("no-chats").hidden = searching || state.chats.length > 0;
  $("more-chats").hidden = searching || !state.next;
  markCurrent();
  showTitle();
}

function chatItem(chat) {
  const item = document.createElement("li");
  item.dataset.id = chat.id;
  const open = document.createElement("a");
  open.className = "open";
  open.href = `#chat=${encodeURIComponent(chat.id)}`;
  const title = document.createElement("span");
  title.className = "chat-title";
  title.textContent = chat.title || chat.id;
  const time = document.createElement("span");
  time.className = "chat-time";
  time.textContent = when(chat.updated_at);
  open.append(title, time);
  const name = chat.title || chat.id;
  const rename = iconButton("rename", `Rename ${name}`, "rename", () => startRename(item, chat));
  const remove = iconButton("delete", `Delete ${name}`, "delete", () => deleteChat(chat));
  const actions = document.createElement("span");
  actions.className = "chat-actions";
  actions.append(rename, remove);
  item.append(open, actions);
  return item;
}

function markCurrent() {
  for (const item of $("chats").querySelectorAll("li[data-id]")) {
    if (item.dataset.id === state.chat) item.setAttribute("aria-current", "true");
    else item.removeAttribute("aria-current");
  }
}

function startRename(item, chat) {
  const field = document.createElement("input");
  field.className = "rename-field";
  field.value = chat.title || "";
  field.maxLength = 200;
  field.setAttribute("aria-label", "The chat's new title");
  field.addEventListener("keydown", async (event) => {
    if (event.key === "Escape") showChats();
    if (event.key !== "Enter") return;
    event.preventDefault();
    try {
      await call("POST", chatPath("title", chat.id), { title: field.value.trim() });
      await loadChats();
    } catch (error) {
      showError(error.message);
    }
  });
  item.replaceChildren(field);
  field.focus();
  field.select();
}

async function deleteChat(chat) {
  const name = chat.title || chat.id;
  if (!window.confirm(`Delete “${name}”? Its messages, prompt and usage are removed for good.`)) return;
  try {
    await call("DELETE", encodeURIComponent(chat.id));
    if (chat.id === state.chat) openChat(randomChatId());
    await loadChats();
  } catch (error) {
    showError(error.message);
  }
}

// ---- The model picker (GET /v1/models), remembered per chat ---------------------------

async function loadModels() {
  try {
    const models = await call("GET", "v1/models").then(json);
    const ids = models.data.map((model) => model.id).sort();
    $("model").replaceChildren(new Option("Default model", ""), ...ids.map((id) => new Option(id, id)));
    showModel(state.chat);
  } catch (_) {
    // Without the list, every turn asks the configured model.
  }
}

/** The model picked for `chat`, if it is still offered. */
function showModel(chat) {
  const picked = (chat && localStorage.getItem(MODEL + chat)) || "";
  const offered = [...$("model").options].some((option) => option.value === picked);
  $("model").value = offered ? picked : "";
}

function pickModel() {
  // A temporary chat leaves no trace, in this browser either.
  if (!state.chat || state.temporary) return;
  if ($("model").value) localStorage.setItem(MODEL + state.chat, $("model").value);
  else localStorage.removeItem(MODEL + state.chat);
}

// ---- Temporary chats (POST /chats/temporary) -------------------------------------------

/** How long `seconds` is, as a banner says it. */
function lasting(seconds) {
  const units = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
  const [size, name] = units.find(([size]) => seconds >= size && seconds % size === 0) || [1, "second"];
  const count = seconds / size;
  return count === 1 ? `${name === "hour" ? "an" : "a"} ${name}` : `${count} ${name}s`;
}

/** Whether the open chat is a new one, with nothing said in it yet. */
function isNew() {
  return state.messages.length === 0 && !state.chats.some((chat) => chat.id === state.chat);
}

/**
 * The toggle on a new chat, and the banner of a temporary one (or of a new chat that will
 * be temporary once its first message is sent).
 */
function showTemporary() {
  const toggle = $("temporary");
  const fresh = !state.readOnly && !state.temporary && isNew();
  toggle.hidden = !fresh && !state.temporary;
  toggle.disabled = Boolean(state.temporary);
  const on = Boolean(state.temporary) || (fresh && state.offRecord);
  toggle.setAttribute("aria-pressed", String(on));
  document.body.classList.toggle("off-record", on);
  const banner = $("temporary-banner");
  banner.hidden = !on;
  if (state.temporary) {
    banner.textContent = `Temporary chat: not in your chats or search, deleted ` +
      `${lasting(state.temporary)} after its last message.`;
  } else if (on) {
    banner.textContent = "Temporary chat: not in your chats or search, deleted soon after its " +
      "last message.";
  }
  // A shared snapshot's title is its own.
  if (!state.readOnly) showTitle();
}

function toggleTemporary() {
  if (state.temporary) return;
  state.offRecord = !state.offRecord;
  showTemporary();
}

/**
 * Whether the temporary chat shown still exists: once expired, a turn sent to its id would
 * make a new chat of that id, a kept one. Expired, a new chat is opened in its place, to be
 * temporary too, with what was typed left in the box to send again.
 */
async function temporaryAlive() {
  if (!state.temporary) return true;
  const chat = state.chat;
  const read = await call("GET", chatPath("chat"));
  if (read.headers.get("X-Chat-Temporary") || chat !== state.chat) return chat === state.chat;
  openChat(randomChatId());
  state.offRecord = true;
  showTemporary();
  showError("That temporary chat has expired and is deleted. Send again to start a new temporary chat.");
  return false;
}

/**
 * A new chat meant to be temporary is made so before anything is sent to it (the proxy
 * gives it its id); false when that failed, and nothing is sent.
 */
async function madeTemporary() {
  if (!state.offRecord || state.temporary || !isNew()) return true;
  state.making = true;
  const from = state.chat;
  try {
    const made = await call("POST", "chats/temporary").then(json);
    // Another chat was opened meanwhile: what was typed is not sent to either.
    if (state.chat !== from) return false;
    state.chat = made.id;
    state.temporary = made.expires_after_seconds;
    $("chat-id").value = state.chat;
    history.replaceState(null, "", `#chat=${encodeURIComponent(state.chat)}`);
    showTemporary();
    return true;
  } catch (error) {
    showError(error.message);
    return false;
  } finally {
    state.making = false;
  }
}

// ---- Read-only links (POST /<chat_id>/share, GET /shared/<token>) -------------------

function linkTo(token) {
  return new URL(`playground#shared=${token}`, api).href;
}

function openShare() {
  $("new-link").hidden = true;
  $("link").value = "";
  $("share-dialog").showModal();
  loadLinks();
}

async function loadLinks() {
  try {
    const links = await call("GET", chatPath("shares")).then(json);
    $("links").replaceChildren(...links.data.map(linkItem));
    $("no-links").hidden = links.data.length > 0;
  } catch (error) {
    showError(error.message);
  }
}

function linkItem(link) {
  const item = document.createElement("li");
  item.dataset.id = link.id;
  const what = document.createElement("span");
  const until = new Date(link.expires_at * 1000).toLocaleDateString([], { dateStyle: "medium" });
  what.textContent = `Made ${when(link.created_at)}, until ${until}`;
  const revoke = button("Revoke", "secondary revoke", async () => {
    try {
      await call("DELETE", chatPath(`shares/${encodeURIComponent(link.id)}`));
      await loadLinks();
    } catch (error) {
      showError(error.message);
    }
  });
  revoke.setAttribute("aria-label", `Revoke the link made ${when(link.created_at)}`);
  item.append(what, revoke);
  return item;
}

async function makeLink() {
  try {
    const made = await call("POST", chatPath("share"), {}).then(json);
    // The token is in the fragment, which browsers never send: it reaches no server's log.
    $("link").value = linkTo(made.token);
    $("new-link").hidden = false;
    $("link").select();
    await loadLinks();
  } catch (error) {
    showError(error.message);
  }
}

/** A shared chat's snapshot, read-only: no list of chats, no composer, no actions. */
async function showShared(token) {
  state.readOnly = true;
  document.body.classList.add("shared-view");
  state.chat = "";
  state.messages = [];
  showMessages();
  $("title").textContent = "Shared chat";
  document.title = "Shared chat · chat-proxy playground";
  try {
    const response = await fetch(new URL(`shared/${encodeURIComponent(token)}`, api), {
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(await errorText(response));
    const snapshot = await response.json();
    const title = snapshot.title || "Shared chat";
    $("title").textContent = title;
    document.title = `${title} · chat-proxy playground`;
    const made = new Date(snapshot.created_at * 1000).toLocaleString([], {
      dateStyle: "medium",
      timeStyle: "short",
    });
    $("shared-banner").textContent = `A shared chat, read-only, as it was on ${made}.`;
    $("shared-banner").hidden = false;
    state.messages = snapshot.messages.map((entry) => ({
      role: entry.role,
      content: entry.content,
      urls: entry.urls || (entry.url ? [entry.url] : []),
    }));
    showMessages();
  } catch (error) {
    showError(`This link does not open: ${error.message}`);
  }
}

function sharedFromFragment() {
  const match = /^#shared=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
  return match ? match[1] : "";
}

// ---- Searching the caller's chats (GET /chats?q=) ------------------------------------

let searchTimer = null;

/** Searches as one types, once typing pauses; an empty box shows the chats again. */
function searchSoon() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => search(), 250);
}

async function search(more = false) {
  const q = $("search").value.trim();
  const searching = q !== "";
  $("chats").hidden = searching;
  $("more-chats").hidden = searching || !state.next;
  $("no-chats").hidden = searching || state.chats.length > 0;
  $("found").hidden = !searching;
  if (!searching) {
    state.search = { q: "", next: null, hits: [] };
    state.asked.search++;
    return;
  }
  const query = new URLSearchParams({ q, limit: String(PAGE) });
  if (more && state.search.next) query.set("after", state.search.next);
  const asked = ++state.asked.search;
  try {
    const page = await call("GET", `chats?${query}`).then(json);
    if (asked !== state.asked.search) return;
    const hits = more ? state.search.hits.concat(page.chats) : page.chats;
    state.search = { q, next: page.has_more ? page.next : null, hits };
    $("hits").replaceChildren(...hits.map((hit) => hitItem(hit, q)));
    $("found-hint").textContent = hits.length ? "" : `No chat says “${q}”.`;
    if (page.cut_short) {
      $("found-hint").textContent += ` Searched ${page.scanned} chats so far.`;
    }
    $("more-hits").hidden = !state.search.next;
  } catch (error) {
    showError(error.message);
  }
}

/** `text` with each case-insensitive occurrence of `q` marked. */
function marked(text, q) {
  const out = [];
  const lower = text.toLowerCase();
  const needle = q.toLowerCase();
  let from = 0;
  for (let at = lower.indexOf(needle); needle && at >= 0; at = lower.indexOf(needle, from)) {
    out.push(document.createTextNode(text.slice(from, at)));
    const mark = document.createElement("mark");
    mark.textContent = text.slice(at, at + needle.length);
    out.push(mark);
    from = at + needle.length;
  }
  out.push(document.createTextNode(text.slice(from)));
  return out;
}

/** One search hit: its chat's title and where it says it; opening it shows that message. */
function hitItem(hit, q) {
  const item = document.createElement("li");
  item.dataset.id = hit.id;
  const open = document.createElement("a");
  open.className = "open";
  open.href = `#chat=${encodeURIComponent(hit.id)}`;
  const title = document.createElement("span");
  title.className = "chat-title";
  title.append(...marked(hit.title || hit.id, q));
  const snippet = document.createElement("span");
  snippet.className = "snippet";
  const where = hit.match || {};
  if (where.in === "message") snippet.append(...marked(where.snippet || "", q));
  else snippet.textContent = "in its title";
  open.append(title, snippet);
  open.addEventListener("click", (event) => {
    event.preventDefault();
    openChat(hit.id, where.in === "message" ? where.index : null);
  });
  item.append(open);
  return item;
}

function openSidebar() {
  $("sidebar").classList.add("open");
  $("toggle-sidebar").setAttribute("aria-expanded", "true");
  $("scrim").hidden = false;
}

function closeSidebar() {
  $("sidebar").classList.remove("open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
  $("scrim").hidden = true;
}

// ---- The composer ---------------------------------------------------------------------

/** The message box as tall as what is typed in it (up to its style's limit). */
function fitMessage() {
  const box = $("message");
  box.style.height = "auto";
  box.style.height = `${box.scrollHeight + box.offsetHeight - box.clientHeight}px`;
}

/** On a phone: the image URL, moderation and Clear behind "+". */
function toggleExtras(open = !$("composer").classList.contains("extras-open")) {
  $("composer").classList.toggle("extras-open", open);
  $("more").setAttribute("aria-expanded", String(open));
}

// A phone (narrow, or a finger for a pointer) has no Enter, Shift or Escape keys to name.
const PHONE = window.matchMedia("(max-width: 720px), (pointer: coarse)");
const HINTS = {
  message: ["Message (Enter sends, Shift+Enter is a new line, Escape stops)", "Message"],
  image: ["Image URL (optional: ask about the picture at https://…)", "Image URL (optional)"],
};
function showHints() {
  const phone = PHONE.matches ? 1 : 0;
  $("message").placeholder = HINTS.message[phone];
  $("image-url").placeholder = HINTS.image[phone];
}

// ---- Wiring -----------------------------------------------------------------------------

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
    if (state.streaming) stop();
    else send();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.streaming) stop();
  });
  const openById = () => {
    $("settings").close();
    openChat($("chat-id").value);
  };
  $("open-chat").addEventListener("click", openById);
  $("chat-id").addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    // Closing the panel gives the focus back to Settings, which the same Enter would press.
    event.preventDefault();
    openById();
  });
  $("open-settings").append(icon("settings"));
  $("open-settings").addEventListener("click", () => $("settings").showModal());
  $("close-settings").addEventListener("click", () => $("settings").close());
  $("new-chat").addEventListener("click", () => openChat(randomChatId()));
  $("temporary").append(icon("temporary"));
  $("temporary").addEventListener("click", toggleTemporary);
  $("conversation").addEventListener("scroll", showToBottom, { passive: true });
  $("to-bottom").append(icon("down"));
  $("to-bottom").addEventListener("click", () => {
    const view = $("conversation");
    view.scrollTop = view.scrollHeight;
    showToBottom();
  });
  $("more-chats").addEventListener("click", () => loadChats(true));
  $("search").addEventListener("input", searchSoon);
  $("search").addEventListener("keydown", (event) => {
    if (event.key === "Escape" && $("search").value) {
      event.stopPropagation();
      $("search").value = "";
      search();
    }
  });
  $("more-hits").addEventListener("click", () => search(true));
  $("share").addEventListener("click", openShare);
  $("model").addEventListener("change", pickModel);
  $("make-link").addEventListener("click", makeLink);
  $("copy-link").addEventListener("click", () => copyText($("link").value, $("copy-link")));
  $("close-share").addEventListener("click", () => $("share-dialog").close());
  $("toggle-sidebar").addEventListener("click", openSidebar);
  $("close-sidebar").addEventListener("click", closeSidebar);
  $("scrim").addEventListener("click", closeSidebar);
  $("more").append(icon("plus"));
  $("more").addEventListener("click", () => toggleExtras());
  $("message").addEventListener("input", fitMessage);
  PHONE.addEventListener("change", showHints);
  showHints();
  $("use-key").addEventListener("click", () => {
    sessionStorage.setItem(KEY, $("api-key").value.trim());
    $("api-key").value = "";
    $("key-row").hidden = true;
    loadChats();
    loadChat();
  });
  $("clear").addEventListener("click", () =>
    run(async () => {
      await call("POST", chatPath("clear"), {});
      await loadChat();
    }, "The chat's messages are cleared; its prompt stays."),
  );
  $("save-chat-prompt").addEventListener("click", () =>
    run(async () => {
      if (!(await madeTemporary())) throw new Error("The temporary chat could not be made.");
      await call("POST", chatPath("system"), { content: $("chat-prompt").value });
    }, "This chat's prompt is saved."),
  );
  $("save-global-prompt").addEventListener("click", () =>
    run(() => call("POST", "system", { content: $("global-prompt").value }),
      "The global prompt is saved."),
  );
  $("moderate").addEventListener("click", () =>
    run(async () => {
      const result = await call("POST", "mod", { content: $("message").value }).then(json);
      const first = result.results[0];
      const flagged = Object.keys(first.categories).filter((c) => first.categories[c]);
      setStatus(first.flagged ? `Flagged: ${flagged.join(", ")}` : "Not flagged.");
    }),
  );
  window.addEventListener("hashchange", () => {
    if (sharedFromFragment() || state.readOnly) {
      window.location.reload();
      return;
    }
    const id = chatFromFragment();
    if (id !== state.chat) openChat(id);
  });
}

wire();
if (sharedFromFragment()) {
  showShared(sharedFromFragment());
} else {
  loadChats();
  openChat(chatFromFragment() || randomChatId());
  loadModels();
}
