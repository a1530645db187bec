"""The OpenAI Agents SDK against the proxy's Responses API, as its users write it: an agent
with instructions and one function tool, run by the Runner over several turns, its history
kept by the proxy (`previous_response_id`). The echo upstream answers, so the replies say
how many items each model call was sent."""

import asyncio

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from conftest import CALLERS

# Traces go to OpenAI's servers; the proxy is the only server here.
set_tracing_disabled(True)


@function_tool
def lookup(word: str) -> str:
    """Looks a word up in the dictionary."""
    return f"{word}: a small wallaby"


def agent(proxy):
    client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=CALLERS["alice"], max_retries=0)
    return Agent(name="Dictionary", instructions="Answer with the dictionary's words.",
                 tools=[lookup], model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client))


def test_an_agent_calls_its_tool_and_goes_on_from_the_proxys_history(proxy):
    dictionary = agent(proxy)

    async def conversation():
        first = await Runner.run(dictionary, "What is a quokka? [call]")
        # The model called the tool; the Runner ran it and sent the question, the call
        # and its output back.
        assert first.final_output == "echo: What is a quokka? [call]: a small wallaby (3 items)"
        calls = [item for item in first.new_items if item.type == "tool_call_item"]
        assert len(calls) == 1
        second = await Runner.run(dictionary, "And a wombat?",
                                  previous_response_id=first.last_response_id)
        # Only the new message was sent by the SDK; the proxy sent the rest upstream.
        assert second.final_output == "echo: And a wombat? (5 items)"
        third = await Runner.run(dictionary, "Thanks",
                                 previous_response_id=second.last_response_id)
        assert third.final_output == "echo: Thanks (7 items)"
        return third

    third = asyncio.run(conversation())
    assert third.last_response_id.startswith("resp_")


def test_an_agent_streams_its_answer(proxy):
    dictionary = agent(proxy)

    async def streamed():
        run = Runner.run_streamed(dictionary, "Tell me about kangaroos")
        deltas = []
        async for event in run.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
        return run, deltas

    run, deltas = asyncio.run(streamed())
    assert len(deltas) > 2
    assert "".join(deltas) == run.final_output == "echo: Tell me about kangaroos (1 item)"


def test_an_agent_keeps_its_history_in_a_conversation(proxy):
    dictionary = agent(proxy)
    client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=CALLERS["alice"], max_retries=0)

    async def conversation():
        made = await client.conversations.create()
        first = await Runner.run(dictionary, "Hello", conversation_id=made.id)
        second = await Runner.run(dictionary, "Again", conversation_id=made.id)
        items = await client.conversations.items.list(made.id, order="asc")
        return first, second, items

    first, second, items = asyncio.run(conversation())
    # The global prompt and the agent's instructions, then the conversation: its first
    # exchange, then the new message.
    assert first.final_output == "echo: Hello (3 items)"
    assert second.final_output == "echo: Again (5 items)"
    assert [item.type for item in items.data] == ["message"] * 4


def test_an_agents_compaction_session_compacts_through_the_proxy(proxy, tmp_path):
    from agents import SQLiteSession
    from agents.memory import OpenAIResponsesCompactionSession

    client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=CALLERS["alice"], max_retries=0)
    planner = Agent(name="Planner", instructions="Plan trips.",
                    model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client))
    stored = SQLiteSession("trip", str(tmp_path / "sessions.db"))
    # As its users write it, compacting after every turn (the default waits for a long
    # history).
    session = OpenAIResponsesCompactionSession("trip", stored, client=client, model="gpt-4o-mini",
                                               should_trigger_compaction=lambda context: True)

    async def trip():
        first = await Runner.run(planner, "Three days in Lisbon?", session=session)
        second = await Runner.run(planner, "Only museums.", session=session)
        return first, second, await session.get_items()

    first, second, items = asyncio.run(trip())
    assert first.final_output == "echo: Three days in Lisbon? (1 item)"
    kinds = [item.get("type") for item in items]
    # What the session keeps after compacting: the user messages, then one compaction
    # item the proxy's upstream made, standing for the rest.
    assert "compaction" in kinds, items
    assert kinds[-1] == "compaction", kinds
    # The second turn was sent the compacted first turn: its user message, the compaction
    # item, then the new message.
    assert second.final_output == "echo: Only museums. (3 items)"
