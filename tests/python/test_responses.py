"""The official `openai` SDK's Responses API against the proxy (the echo upstream under
cargo lambda): buffered and streamed, a chain of `previous_response_id` turns, a branch,
conversation turns that the seed routes see, the stored responses' routes, and a function
tool loop whose items all stay in order."""

import json
import time
import urllib.request
import uuid

import openai
import pytest

from conftest import CALLERS


def client(proxy, caller="alice", **options):
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=CALLERS[caller], **options)


def output_text(response):
    return "".join(part.text for item in response.output if item.type == "message"
                   for part in item.content if part.type == "output_text")


def get(proxy, path, caller="alice"):
    request = urllib.request.Request(f"{proxy.url}{path}",
                                     headers={"Authorization": f"Bearer {CALLERS[caller]}"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def test_a_chain_of_three_turns_each_sees_its_whole_history(proxy):
    sdk = client(proxy)
    first = sdk.responses.create(model="gpt-4o-mini", input="one")
    assert first.id.startswith("resp_") and first.object == "response"
    assert output_text(first) == "echo: one (1 item)"
    second = sdk.responses.create(model="gpt-4o-mini", input="two", previous_response_id=first.id)
    # The echo counts what it was sent: the first turn's two items, and this one.
    assert output_text(second) == "echo: two (3 items)"
    third = sdk.responses.create(model="gpt-4o-mini", input="three", previous_response_id=second.id)
    assert output_text(third) == "echo: three (5 items)"
    assert third.previous_response_id == second.id
    # A branch from the first: its history, not the chain's.
    branch = sdk.responses.create(model="gpt-4o-mini", input="other", previous_response_id=first.id)
    assert output_text(branch) == "echo: other (3 items)"
    assert sdk.responses.retrieve(second.id).id == second.id


def test_a_streamed_response_and_its_events(proxy):
    sdk = client(proxy)
    stream = sdk.responses.create(model="gpt-4o-mini", input="tell me about Lisbon", stream=True)
    kinds, deltas, completed = [], [], None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert len(deltas) > 2 and "".join(deltas) == "echo: tell me about Lisbon (1 item)"
    # Kept by the time the stream ended.
    after = sdk.responses.create(model="gpt-4o-mini", input="more", previous_response_id=completed.id)
    assert output_text(after) == "echo: more (3 items)"


def test_conversation_turns_are_the_seed_chats_turns(proxy):
    chat = f"conv-{uuid.uuid4().hex[:10]}"
    urllib.request.urlopen(urllib.request.Request(
        f"{proxy.url}/{chat}/chat", data=json.dumps({"content": "from the seed"}).encode(),
        headers={"Authorization": f"Bearer {CALLERS['alice']}", "Content-Type": "application/json"}))
    sdk = client(proxy)
    response = sdk.responses.create(model="gpt-4o-mini", input="from the SDK", conversation=chat)
    # The global prompt, the seed's turn (2) and the new item.
    assert output_text(response) == "echo: from the SDK (4 items)"
    assert response.conversation.id == chat
    transcript = get(proxy, f"/{chat}/chat")
    assert [m["content"] for m in transcript][2:] == ["from the SDK", "echo: from the SDK (4 items)"]
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="gpt-4o-mini", input="x", conversation=f"none-{chat}")
    with pytest.raises(openai.BadRequestError):
        client(proxy, max_retries=0).responses.create(
            model="gpt-4o-mini", input="x", conversation=chat, previous_response_id=response.id)


def test_input_items_are_paged_and_a_deleted_response_is_gone(proxy):
    sdk = client(proxy)
    response = sdk.responses.create(model="gpt-4o-mini", input=[
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "user", "content": "c"}])
    page = sdk.responses.input_items.list(response.id, limit=2, order="asc")
    assert [item.content[0].text if not isinstance(item.content, str) else item.content
            for item in page.data] == ["a", "b"]
    assert page.has_more
    everything = [item.id for item in sdk.responses.input_items.list(response.id, order="asc")]
    assert len(everything) == 3 and len(set(everything)) == 3
    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_a_function_tool_loop_keeps_every_item(proxy):
    sdk = client(proxy)
    tools = [{"type": "function", "name": "lookup", "description": "Looks a word up.",
              "parameters": {"type": "object", "properties": {"word": {"type": "string"}},
                             "required": ["word"], "additionalProperties": False}, "strict": True}]
    asked = sdk.responses.create(model="gpt-4o-mini", input="What is a quokka? [call]", tools=tools)
    call = next(item for item in asked.output if item.type == "function_call")
    assert call.name == "lookup" and json.loads(call.arguments) == {"word": "What is a quokka? [call]"}
    answered = sdk.responses.create(
        model="gpt-4o-mini", tools=tools, previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "a small wallaby"}])
    # Upstream saw the question, the call and its output.
    assert output_text(answered) == "echo: a small wallaby (3 items)"
    with pytest.raises(openai.BadRequestError) as raised:
        client(proxy, max_retries=0).responses.create(
            model="gpt-4o-mini", previous_response_id=answered.id,
            input=[{"type": "function_call_output", "call_id": "call_nobody", "output": "x"}])
    assert raised.value.code == "invalid_function_call_output"


def test_another_caller_cannot_read_or_continue_a_response(proxy):
    mine = client(proxy).responses.create(model="gpt-4o-mini", input="private")
    theirs = client(proxy, caller="bob", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.create(model="gpt-4o-mini", input="x", previous_response_id=mine.id)


def test_conversations_hold_the_items_of_their_responses(proxy):
    sdk = client(proxy)
    conversation = sdk.conversations.create(metadata={"topic": "marsupials"},
                                            items=[{"type": "message", "role": "user", "content": "Hello"}])
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "marsupials"}
    answer = sdk.responses.create(model="gpt-4o-mini", input="What is a quokka?", conversation=conversation.id)
    # The global prompt, the item the conversation began with, and the question.
    assert output_text(answer) == "echo: What is a quokka? (3 items)"
    items = sdk.conversations.items.list(conversation.id, order="asc")
    assert [item.type for item in items.data] == ["message", "message", "message"]
    assert items.data[-1].role == "assistant"
    added = sdk.conversations.items.create(conversation.id, items=[{"type": "message", "role": "user", "content": "More?"}])
    first = sdk.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert first.id == added.data[0].id
    sdk.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    assert len(sdk.conversations.items.list(conversation.id).data) == 3
    assert sdk.conversations.update(conversation.id, metadata={"topic": "wombats"}).metadata == {"topic": "wombats"}
    sdk.conversations.delete(conversation.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)


def test_a_chain_is_compacted_and_its_compaction_item_carries_the_next_turn(proxy):
    sdk = client(proxy)
    first = sdk.responses.create(model="gpt-4o-mini", input="Plan three days in Lisbon.")
    second = sdk.responses.create(model="gpt-4o-mini", input="Only museums.",
                                  previous_response_id=first.id)
    compacted = sdk.responses.compact(model="gpt-4o-mini", previous_response_id=second.id)
    assert compacted.object == "response.compaction"
    # The user messages kept, then one compaction item standing for the whole chain,
    # which the proxy sent upstream (the echo says how many items it replaced).
    kinds = [item.type for item in compacted.output]
    assert kinds == ["message", "message", "compaction"], kinds
    assert compacted.output[-1].encrypted_content == "echo-compaction of 4 items"
    assert compacted.usage.input_tokens > 0
    # The caller goes on from the compacted window, without the chain.
    # (The SDK types a user message of a compaction's output as an output message.)
    window = [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]
    after = sdk.responses.create(model="gpt-4o-mini",
                                 input=window + [{"role": "user", "content": "And food?"}])
    assert output_text(after) == "echo: And food? (4 items)"
    # The chain itself is as it was: compaction stores nothing, and it goes on whole.
    again = sdk.responses.create(model="gpt-4o-mini", input="Or food?",
                                 previous_response_id=second.id)
    assert output_text(again) == "echo: Or food? (5 items)"


def test_the_next_turns_input_tokens_are_counted_from_the_stored_chain(proxy):
    sdk = client(proxy)
    first = sdk.responses.create(model="gpt-4o-mini", input="Plan three days in Lisbon.")
    count = sdk.responses.input_tokens.count(model="gpt-4o-mini", input="Only museums.",
                                             previous_response_id=first.id)
    assert count.object == "response.input_tokens"
    # The echo counts a token a word and three an item: the chain's two items, then the
    # new one, as the turn itself would send them.
    turn = sdk.responses.create(model="gpt-4o-mini", input="Only museums.",
                                previous_response_id=first.id)
    assert count.input_tokens == turn.usage.input_tokens > 0


def wait_while(sdk, response, statuses):
    """Reads a background response until its status leaves `statuses` (within 20 s);
    answers the last read and every status it was seen in."""
    seen = [response.status]
    deadline = time.monotonic() + 20
    while response.status in statuses:
        assert time.monotonic() < deadline, f"still {response.status}: {seen}"
        time.sleep(0.05)
        response = sdk.responses.retrieve(response.id)
        if seen[-1] != response.status:
            seen.append(response.status)
    return response, seen


def test_a_background_response_is_polled_until_it_completes_then_continued(proxy):
    sdk = client(proxy)
    queued = sdk.responses.create(model="gpt-4o-mini", input="the sea, the sky and the hills",
                                  background=True)
    assert queued.status == "queued" and queued.background is True
    assert queued.output == []
    done, seen = wait_while(sdk, queued, ("queued", "in_progress"))
    assert done.status == "completed", seen
    assert "in_progress" in seen, seen
    assert done.id == queued.id
    assert output_text(done) == "echo: the sea, the sky and the hills (1 item)"
    after = sdk.responses.create(model="gpt-4o-mini", input="and then?", previous_response_id=done.id)
    assert output_text(after) == "echo: and then? (3 items)"


def test_a_background_response_cancelled_mid_run_keeps_what_it_had_said(proxy):
    sdk = client(proxy)
    words = " ".join(f"word{n}" for n in range(40))
    queued = sdk.responses.create(model="gpt-4o-mini", input=words, background=True)
    running, seen = wait_while(sdk, queued, ("queued",))
    assert running.status == "in_progress", seen
    time.sleep(0.4)
    cancelled = sdk.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    kept = output_text(cancelled)
    assert kept and f"echo: {words}".startswith(kept) and len(kept) < len(words), kept
    assert sdk.responses.cancel(queued.id).model_dump() == cancelled.model_dump()
    assert sdk.responses.retrieve(queued.id).model_dump() == cancelled.model_dump()
    with pytest.raises(openai.BadRequestError):
        sdk.responses.cancel(sdk.responses.create(model="gpt-4o-mini", input="plain").id)


def test_another_caller_cannot_read_or_cancel_a_background_response(proxy):
    queued = client(proxy).responses.create(model="gpt-4o-mini", input="mine", background=True)
    with pytest.raises(openai.NotFoundError):
        client(proxy, "bob").responses.retrieve(queued.id)
    with pytest.raises(openai.NotFoundError):
        client(proxy, "bob").responses.cancel(queued.id)
    wait_while(client(proxy), queued, ("queued", "in_progress"))


def test_a_streamed_background_response_is_resumed_where_the_client_left_it(proxy):
    sdk = client(proxy)
    words = " ".join(f"word{n}" for n in range(12))
    stream = sdk.responses.create(model="gpt-4o-mini", input=words, background=True, stream=True)
    first = []
    for event in stream:
        first.append(event)
        if event.type == "response.output_text.delta" and len(first) >= 6:
            break
    stream.close()
    response_id = first[0].response.id
    last = first[-1].sequence_number
    rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=last))
    numbers = [event.sequence_number for event in first + rest]
    assert numbers == list(range(len(numbers))), numbers
    assert rest[-1].type == "response.completed"
    assert output_text(rest[-1].response) == f"echo: {words} (1 item)"
    text = "".join(event.delta for event in first + rest if event.type == "response.output_text.delta")
    assert text == f"echo: {words} (1 item)"
    assert output_text(sdk.responses.retrieve(response_id)) == text
