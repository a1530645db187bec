"""What the fuzzer (test_openapi.py) may not count as a failure, each case narrowed to the
exact answer that explains it, so anything else the proxy answers still fails the run.

Loaded by `schemathesis run` through SCHEMATHESIS_HOOKS.
"""

import atexit
import collections
import json
import os

import schemathesis

# Why each dropped failure was dropped, written to FUZZ_FILTERED_LOG when the run ends.
DROPPED = collections.Counter()

# Idempotency-Key -> every (method, path, body) sent under it in this run.
SENT_UNDER_KEY = {}

# How the url crate (WHATWG URL parsing) refuses a host that the document's pattern, a
# regular expression, cannot tell from a good one: a last label that is a number makes the
# host an IPv4 address, and it must then be a valid one.
HOST_ERRORS = (
    "empty host",
    "invalid port number",
    "invalid IPv4 address",
    "invalid IPv6 address",
    "invalid international domain name",
    "invalid domain character",
)


def idempotency_key(request):
    return request.headers.get("Idempotency-Key")


def fingerprint(request):
    body = request.body
    if isinstance(body, str):
        body = body.encode()
    return (request.method, request.path_url.split("?")[0], body or b"")


# Ids the proxy answered with (stored responses, conversations and their items, chats with
# a turn, their read-only links' tokens), so that the routes that read them by id are also
# fuzzed with ids that exist, not only with random ones (which are all 404s).
def known(variable):
    """What test_openapi.py made before the run (`known_things`), comma-separated."""
    return [value for value in os.environ.get(variable, "").split(",") if value]


SEEN_IDS = {"response_id": known("FUZZ_KNOWN_RESPONSES"), "conversation_id": [], "item_id": [],
            "token": [tuple(link.split(":", 1)) for link in known("FUZZ_KNOWN_LINKS")],
            # (Not the links' chat: named to the fuzzer, it would be deleted by it.)
            "chat_id": [],
            # A background response cancelled: cancelled again, it is a 200.
            "background_id": known("FUZZ_CANCELLED_RESPONSE")}


def remember_ids(request, response):
    path = request.path_url.split("?")[0]
    # A response or conversation deleted is forgotten: its id now reaches only a 404.
    if request.method == "DELETE" and response.status_code == 200:
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v1", "responses"]:
            SEEN_IDS["response_id"] = [known for known in SEEN_IDS["response_id"] if known != parts[2]]
        if len(parts) == 3 and parts[:2] == ["v1", "conversations"]:
            SEEN_IDS["conversation_id"] = [known for known in SEEN_IDS["conversation_id"] if known != parts[2]]
    kind = response.headers.get("content-type", "")
    kind = (kind[0] if kind else "") if isinstance(kind, list) else kind
    if response.status_code != 200 or not kind.startswith("application/json"):
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    if body.get("object") == "response" and body.get("store") is True:
        # A background response is a stored turn only once completed: queued, running,
        # cancelled or failed, its input items are a 404.
        if body.get("background") is True:
            SEEN_IDS["background_id"].append(body["id"])
        else:
            SEEN_IDS["response_id"].append(body["id"])
    if body.get("object") == "conversation":
        SEEN_IDS["conversation_id"].append(body["id"])
    # A chat with a turn to show (its link is not a 409), and the links made to chats.
    if request.method == "POST" and path.count("/") == 2 and path.endswith("/chat"):
        SEEN_IDS["chat_id"].append(path.split("/")[1])
    if body.get("object") == "chat.share":
        SEEN_IDS["token"].append((path.split("/")[1], body["token"]))
    if path.startswith("/v1/conversations/") and path.endswith("/items") and body.get("object") == "list":
        conversation = path.split("/")[3]
        for item in body.get("data") or []:
            if isinstance(item, dict) and "id" in item:
                SEEN_IDS["item_id"].append((conversation, item["id"]))


# What test_openapi.py made before the run is never named in a deletion, so the routes
# that read by id reach something whatever order the fuzzer takes the operations in.
KEPT = {"response_id": set(SEEN_IDS["response_id"]), "token": set(SEEN_IDS["token"])}


def choices(name, operation):
    values = SEEN_IDS[name]
    if getattr(operation, "method", "").upper() == "DELETE":
        values = [value for value in values if value not in KEPT.get(name, ())]
    return values


def pick(values):
    return values[os.urandom(1)[0] % len(values)]


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    """Every other case of a route that names a stored thing gets one that exists."""
    if not path_parameters:
        return path_parameters
    operation = getattr(ctx, "operation", None)
    # A link exists only once a chat with a turn was shared, and a random token is always a
    # 404: these get known ones three times in four, before the coin below.
    often = os.urandom(1)[0] % 4 != 0
    if often and "token" in path_parameters and choices("token", operation):
        chat, token = pick(choices("token", operation))
        known = {**path_parameters, "token": token}
        return {**known, "chat_id": chat} if "chat_id" in path_parameters else known
    # Only a background response can be cancelled (any other is a 400): known ones three
    # times in four, so that the route is reached past its refusals.
    if often and getattr(operation, "path", "").endswith("/cancel") and SEEN_IDS["background_id"]:
        known = SEEN_IDS["background_id"]
        return {**path_parameters, "response_id": known[os.urandom(1)[0] % len(known)]}
    # A response's input items exist only for a stored response: known ones three times in
    # four, so that the route is reached past its 404s whatever the draw.
    if often and getattr(operation, "path", "").endswith("/input_items") and SEEN_IDS["response_id"]:
        return {**path_parameters, "response_id": pick(SEEN_IDS["response_id"])}
    if often and getattr(operation, "path", "").endswith("/share") and SEEN_IDS["chat_id"]:
        chat = SEEN_IDS["chat_id"][os.urandom(1)[0] % len(SEEN_IDS["chat_id"])]
        return {**path_parameters, "chat_id": chat}
    if os.urandom(1)[0] % 2:
        return path_parameters
    if "item_id" in path_parameters and SEEN_IDS["item_id"]:
        conversation, item = SEEN_IDS["item_id"][os.urandom(1)[0] % len(SEEN_IDS["item_id"])]
        return {**path_parameters, "conversation_id": conversation, "item_id": item}
    for name in ("response_id", "conversation_id"):
        if name in path_parameters and choices(name, operation):
            return {**path_parameters, name: pick(choices(name, operation))}
    return path_parameters


@schemathesis.hook
def map_body(ctx, body):
    """A background response holds an instance of the function for its whole answer (the
    echo says a word every 60 ms), and the fuzzer does not wait for it: left to chance,
    hundreds would queue behind the two instances, and requests behind them time out. One
    in eight is kept; the others are asked in the foreground. tests/api/background.rs and
    tests/python/test_responses.py test background responses themselves."""
    if isinstance(body, dict) and body.get("background") is True and os.urandom(1)[0] % 8:
        return {**body, "background": False}
    return body


@schemathesis.hook
def map_query(ctx, query):
    """`stream=true` reads a background response's events again; any other response is a
    400 (only_a_running_background_response, below). Generated at random, it would take
    most reads of a known response: three in four of them read it whole instead."""
    operation = getattr(ctx, "operation", None)
    if getattr(operation, "path", "") != "/v1/responses/{response_id}" or not query:
        return query
    if query.get("stream") == "true" and os.urandom(1)[0] % 4:
        return {name: value for name, value in query.items() if name != "stream"}
    return query


@schemathesis.hook
def after_call(ctx, case, response):
    key = idempotency_key(response.request)
    if key is not None:
        SENT_UNDER_KEY.setdefault(key, set()).add(fingerprint(response.request))
    remember_ids(response.request, response)


def error_code_and_message(response):
    try:
        error = json.loads(response.content)["error"]
        return error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return None, ""


def emulator_refused_non_utf8_body(response):
    """cargo lambda's emulator answers 500 itself, without invoking the function, when a
    body is not UTF-8 (it puts the body into the event as a string). The function's own
    answer to such a body, 400 invalid_encoding, is tested in tests/api/input_errors.rs."""
    body = response.request.body
    if isinstance(body, str) or not body:
        return False
    try:
        body.decode("utf-8")
        return False
    except UnicodeDecodeError:
        pass
    return (
        response.status_code == 500
        and b"httpstatuses.com/500" in response.content
        and response.headers.get("content-type", [""])[0].startswith("text/plain")
    )


def key_was_reused_for_another_request(response):
    """The fuzzer sends the Idempotency-Keys it generates again with other bodies; the
    proxy must then refuse (422), as tests/api/idempotency.rs checks."""
    key = idempotency_key(response.request)
    if key is None or response.status_code != 422:
        return False
    if error_code_and_message(response)[0] != "idempotency_key_reused":
        return False
    return SENT_UNDER_KEY.get(key, set()) - {fingerprint(response.request)} != set()


def url_host_does_not_parse(response):
    code, message = error_code_and_message(response)
    return (
        response.status_code == 400
        and code == "invalid_url"
        and any(f"does not parse ({why})" in message for why in HOST_ERRORS)
    )


def chat_turn_took_only_user_messages(response):
    """With X-Chat-Id, /v1/chat/completions is a turn of a stored chat: it takes `user`
    messages and none of n > 1, tools or functions (400). The document's one schema for
    the body cannot depend on a header; tests/api/openai_api.rs tests each refusal."""
    request = response.request
    if request.headers.get("X-Chat-Id") is None or response.status_code != 400:
        return False
    if request.path_url.split("?")[0] != "/v1/chat/completions":
        return False
    return error_code_and_message(response)[0] in ("invalid_messages", "unsupported_parameter")


def model_is_not_allowed_here(response):
    """`model` takes any name in the document, as OpenAI's does, but a deployment serves
    only the models ALLOWED_MODELS lists (400 model_not_allowed; the fuzzed proxies'
    list comes in FUZZ_ALLOWED_MODELS). tests/api/openai_api.rs tests the refusal."""
    request = response.request
    if response.status_code != 400 or error_code_and_message(response)[0] != "model_not_allowed":
        return False
    try:
        model = json.loads(request.body)["model"]
    except (ValueError, KeyError, TypeError):
        return False
    allowed = os.environ["FUZZ_ALLOWED_MODELS"].split(",")
    return isinstance(model, str) and model not in allowed


def refused_for_what_the_chat_holds(response):
    """What a chat's routes refuse for what is stored, or for an order of messages, which
    the document's schemas cannot know: `index` of /edit and /fork names a place in the
    chat's transcript (400 invalid_index when there is no such user message), `into` of
    /fork and /chats/import a chat that must not exist yet (400 chat_exists), and an
    import must fit the chat caps and ask before it answers. tests/api/chats.rs tests each."""
    if response.status_code != 400:
        return False
    path = response.request.path_url.split("?")[0]
    code, message = error_code_and_message(response)
    redo = path.endswith("/edit") or path.endswith("/fork")
    if redo and code == "invalid_index":
        return any(why in message for why in (
            "there is no message", "is an answer, not a user message",
            "is a tool's result, not a user message", "cannot be asked again"))
    makes = path.endswith("/fork") or path == "/chats/import"
    if makes and code == "chat_exists":
        return True
    if path == "/chats/import":
        return code == "chat_too_large" or (
            code == "invalid_value" and "is an answer with no question before it" in message)
    return False


def stored_turn_is_not_as_exported(response):
    """An import's `turns` are the proxy's own stored form, which the document names
    (`StoredTurn`) but does not spell out field by field; the reader refuses a turn that
    is not in it (400 invalid_value, param turns, naming the turn). tests/api/chats.rs
    tests the refusals."""
    if response.status_code != 400 or response.request.path_url.split("?")[0] != "/chats/import":
        return False
    code, message = error_code_and_message(response)
    return code == "invalid_value" and message.startswith("turns[")


def output_answers_no_call(response):
    """A function call's output must answer a call made before it: among the same items,
    or by the chat's newest turn (400 invalid_function_call_output), which depends on
    what the chat holds, not on the item's schema. tests/api/conversations.rs and
    tests/api/responses.rs test the refusal."""
    path = response.request.path_url.split("?")[0]
    if response.status_code != 400 or not path.startswith(("/v1/responses", "/v1/conversations")):
        return False
    return error_code_and_message(response)[0] == "invalid_function_call_output"


def reference_names_no_item(response):
    """An item_reference in a body names an item of the caller's stored responses by its
    id; a generated id names none (404 item_not_found, param `items` or `input`), whatever
    the operation that made the conversation before it. tests/api/responses.rs and
    tests/api/conversations.rs test references that are found."""
    if response.status_code != 404:
        return False
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return error.get("code") == "item_not_found" and error.get("param") in ("items", "input")


def deleted_chat_reads_as_empty(response):
    """The seed routes answer every chat id, an unknown chat being an empty one, as the
    older proxy did: after DELETE /{chat_id}, GET /{chat_id}/chat is `[]`, /system is
    `{"content": ""}` and /usage counts nothing. tests/api/chats.rs checks a deleted chat
    reads so."""
    request = response.request
    path = request.path_url.split("?")[0]
    parts = path.strip("/").split("/")
    if request.method != "GET" or response.status_code != 200 or len(parts) != 2:
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    return (
        (parts[1] == "chat" and body == [])
        or (parts[1] == "system" and body == {"content": ""})
        or (parts[1] == "usage" and isinstance(body, dict) and body.get("turns") == 0
            and body.get("total_tokens") == 0)
    )


def only_a_running_background_response(response):
    """Cancelling, or streaming again, needs a background response, and cancelling one that
    has not ended (400 invalid_request, saying which): which a response is depends on how it
    was made and on time, not on its id's schema. tests/api/background.rs tests each."""
    if response.status_code != 400:
        return False
    code, message = error_code_and_message(response)
    return code == "invalid_request" and (
        "only a response created with `background: true`" in message
        or "it cannot be cancelled" in message)


# Explain any failure of the answer.
EXPLAIN_ANY = (emulator_refused_non_utf8_body,)
# Explain why a request the document allows was refused.
EXPLAIN_REFUSED = (
    key_was_reused_for_another_request,
    url_host_does_not_parse,
    chat_turn_took_only_user_messages,
    model_is_not_allowed_here,
    refused_for_what_the_chat_holds,
    stored_turn_is_not_as_exported,
    output_answers_no_call,
    only_a_running_background_response,
)


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    explanations = EXPLAIN_ANY + (EXPLAIN_REFUSED if failure.code == "ST202" else ())
    if failure.code == "ST301":
        explanations += (deleted_chat_reads_as_empty,)
    if failure.code == "ST302":
        explanations += (reference_names_no_item,)
    for explains in explanations:
        if explains(response):
            DROPPED[f"{failure.code} {explains.__name__}"] += 1
            return False
    return True


@atexit.register
def write_dropped():
    path = os.environ.get("FUZZ_FILTERED_LOG")
    if path:
        with open(path, "w") as out:
            json.dump(dict(sorted(DROPPED.items())), out, indent=2)
