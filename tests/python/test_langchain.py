"""LangChain's `ChatOpenAI` against the proxy's `/v1` with `X-Chat-Id`, written as LangChain
users write it: a `SystemMessage` first, the whole conversation resent on every call (the
framework keeps its own memory), and tools bound to the model. The proxy keeps the chat;
only what is new is stored."""

import json
import urllib.request
import uuid

import pytest
from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from conftest import CALLERS


def model(proxy, chat, **options):
    return ChatOpenAI(model="gpt-4o-mini", base_url=f"{proxy.url}/v1", api_key=CALLERS["alice"],
                      default_headers={"X-Chat-Id": chat}, max_retries=0, **options)


def get(proxy, path):
    request = urllib.request.Request(f"{proxy.url}{path}",
                                     headers={"Authorization": f"Bearer {CALLERS['alice']}"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


@tool
def lookup(word: str) -> str:
    """Looks a word up in the dictionary."""
    return f"{word}: a small wallaby"


def test_a_conversation_with_its_own_memory_is_stored_once(proxy):
    chat = f"lc-{uuid.uuid4().hex[:12]}"
    llm = model(proxy, chat)
    history = [SystemMessage("You answer in one line."), HumanMessage("Hello")]
    history.append(llm.invoke(history))
    history.append(HumanMessage("And again"))
    second = llm.invoke(history)
    # Upstream saw the global prompt, the chat's (LangChain's system message), the first
    # exchange once, and the new question.
    assert second.content == "echo: And again (5 messages)"
    assert get(proxy, f"/{chat}/system")["content"] == "You answer in one line."
    assert [m["content"] for m in get(proxy, f"/{chat}/chat")] == [
        "Hello", "echo: Hello (3 messages)", "And again", "echo: And again (5 messages)"]


def test_a_streamed_turn_with_its_memory(proxy):
    chat = f"lc-{uuid.uuid4().hex[:12]}"
    llm = model(proxy, chat, streaming=True)
    history = [SystemMessage("Be brief."), HumanMessage("one two three")]
    pieces = [chunk.content for chunk in llm.stream(history)]
    assert len([p for p in pieces if p]) > 1, pieces
    assert "".join(pieces) == "echo: one two three (3 messages)"


def test_a_tool_loop_with_bound_tools(proxy):
    chat = f"lc-{uuid.uuid4().hex[:12]}"
    llm = model(proxy, chat).bind_tools([lookup])
    history = [SystemMessage("Use the dictionary."), HumanMessage("What is a quokka? [call]")]
    asked = llm.invoke(history)
    assert asked.tool_calls and asked.tool_calls[0]["name"] == "lookup"
    history.append(asked)
    for call in asked.tool_calls:
        history.append(ToolMessage(lookup.invoke(call["args"]), tool_call_id=call["id"]))
    answered = llm.invoke(history)
    assert answered.content == "echo: What is a quokka? [call]: a small wallaby (5 messages)"
    roles = [m["role"] for m in get(proxy, f"/{chat}/chat")]
    assert roles == ["user", "assistant", "tool", "assistant"]


def test_a_rewritten_memory_is_a_conflict(proxy):
    import openai

    chat = f"lc-{uuid.uuid4().hex[:12]}"
    llm = model(proxy, chat)
    history = [HumanMessage("Hello")]
    history.append(llm.invoke(history))
    history[-1].content = "something the model never said"
    history.append(HumanMessage("Next"))
    with pytest.raises(openai.ConflictError) as raised:
        llm.invoke(history)
    assert raised.value.code == "history_conflict"
