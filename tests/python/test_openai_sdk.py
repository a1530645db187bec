"""The official `openai` Python SDK against the proxy's `/v1`: stateless and stateful,
plain and streamed, the model list, and each error as the SDK's typed exception."""

import json
import urllib.request
import uuid

import openai
import pytest

from conftest import CALLERS, RATE_LIMIT_PER_MINUTE


def client(proxy, caller="alice", **options):
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=CALLERS[caller], **options)


def chat_id():
    return f"sdk-{uuid.uuid4().hex[:12]}"


def transcript(proxy, chat, caller="alice"):
    request = urllib.request.Request(f"{proxy.url}/{chat}/chat",
                                     headers={"Authorization": f"Bearer {CALLERS[caller]}"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def test_a_stateless_completion_is_answered_as_upstream_answers(proxy):
    completion = client(proxy).chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
        temperature=0.2,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: Hello there (2 messages)"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_a_stored_streamed_conversation(proxy):
    chat = chat_id()
    sdk = client(proxy)
    first = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell me about Paris"}],
        stream=True,
        extra_headers={"X-Chat-Id": chat},
    )
    pieces = [chunk.choices[0].delta.content for chunk in first if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) > 3, pieces
    # Global prompt and the question: two messages went upstream.
    assert "".join(pieces) == "echo: Tell me about Paris (2 messages)"

    second = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "And its museums?"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Chat-Id": chat},
    )
    chunks = list(second)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # The history came back from Redis: global prompt, first turn (2), new question.
    assert text == "echo: And its museums? (4 messages)"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

    plain = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Thanks"}],
        extra_headers={"X-Chat-Id": chat},
    )
    assert plain.choices[0].message.content == "echo: Thanks (6 messages)"
    messages = transcript(proxy, chat)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert messages[2] == {"role": "user", "content": "And its museums?"}


def test_image_parts_are_kept_with_the_chat(proxy):
    chat = chat_id()
    completion = client(proxy).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]}],
        extra_headers={"X-Chat-Id": chat},
    )
    assert completion.choices[0].message.content == "echo: What is this? (2 messages) [image: https://example.com/cat.png]"
    assert transcript(proxy, chat)[0] == {"role": "user", "content": "What is this?", "url": "https://example.com/cat.png"}


def test_models_are_listed(proxy):
    models = client(proxy).models.list()
    assert [m.id for m in models.data] == ["gpt-4o-mini"]
    assert all(m.object == "model" for m in models.data)


def test_a_message_a_chat_cannot_keep_is_a_bad_request(proxy):
    with pytest.raises(openai.BadRequestError) as raised:
        client(proxy, max_retries=0).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Hi"}, {"role": "system", "content": "New rules."}],
            extra_headers={"X-Chat-Id": chat_id()},
        )
    assert raised.value.status_code == 400
    assert raised.value.code == "invalid_messages"
    assert "system messages lead the request" in raised.value.message


def test_a_model_is_retrieved(proxy):
    assert client(proxy).models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError) as raised:
        client(proxy).models.retrieve("gpt-5-secret")
    assert raised.value.code == "model_not_found"


def test_a_function_tool_loop_is_kept_by_the_chat(proxy):
    chat = chat_id()
    sdk = client(proxy)
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Looks a word up.",
              "parameters": {"type": "object", "properties": {"word": {"type": "string"}},
                             "required": ["word"]}}}]
    asked = sdk.chat.completions.create(
        model="gpt-4o-mini", tools=tools,
        messages=[{"role": "user", "content": "What is a quokka? [call]"}],
        extra_headers={"X-Chat-Id": chat},
    )
    assert asked.choices[0].finish_reason == "tool_calls"
    call = asked.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"word": "What is a quokka? [call]"}
    answered = sdk.chat.completions.create(
        model="gpt-4o-mini", tools=tools,
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "a small wallaby"}],
        extra_headers={"X-Chat-Id": chat},
    )
    # Upstream saw the prompt, the question, the call and its result.
    assert answered.choices[0].message.content == "echo: a small wallaby (4 messages)"
    messages = transcript(proxy, chat)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["content"].startswith("[tool call lookup(")


def test_a_model_not_allowed_is_a_bad_request(proxy):
    with pytest.raises(openai.BadRequestError) as raised:
        client(proxy, max_retries=0).chat.completions.create(
            model="gpt-5-private", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 400
    assert raised.value.code == "model_not_allowed"
    assert "gpt-5-private" in raised.value.message


def test_a_wrong_key_is_an_authentication_error(proxy):
    sdk = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk.models.list()
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"


def test_an_unknown_path_is_not_found(proxy):
    with pytest.raises(openai.NotFoundError) as raised:
        client(proxy, max_retries=0).files.list()
    assert raised.value.status_code == 404
    assert raised.value.code == "not_found"


def test_past_the_rate_limit_is_a_rate_limit_error(proxy):
    sdk = client(proxy, caller="burst", max_retries=0)
    for _ in range(RATE_LIMIT_PER_MINUTE):
        sdk.models.list()
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.models.list()
    assert raised.value.status_code == 429
    assert raised.value.code == "rate_limit_exceeded"
    assert int(raised.value.response.headers["retry-after"]) >= 1


def test_zz_storage_down_is_a_server_error(proxy, redis):
    """Last: it stops the session's Redis."""
    redis.stop()
    with pytest.raises(openai.InternalServerError) as raised:
        client(proxy, caller="bob", max_retries=0).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Anyone?"}],
            extra_headers={"X-Chat-Id": chat_id()},
        )
    assert raised.value.status_code == 503
    assert raised.value.code == "storage_unavailable"
