"""Requests next to the generation methods that are not LLM calls: no LLM span at all.

Some of them go to generation paths with another method or a longer path (GET and DELETE on
/chat/completions/{id}, POST to /chat/completions/{id} and /responses/{id}/cancel).
"""

from __future__ import annotations

import functools

from kit import Seen, aclient, case, client, need

no_llm_call = functools.partial(case, llm_spans=0, op=None)
STORED = "chatcmpl-stored1"
RESPONSE = "resp_stored1"


@no_llm_call()
def chat_completions_list(seen: Seen) -> None:
    """chat.completions.list(): a page, and every stored completion through auto-pagination."""
    need(client().chat.completions, "list")
    page = seen.obj("page", client().chat.completions.list())
    seen("all", list(page))


@no_llm_call()
def chat_completions_retrieve(seen: Seen) -> None:
    """chat.completions.retrieve(): GET /chat/completions/{id}."""
    need(client().chat.completions, "retrieve")
    seen.obj("completion", client().chat.completions.retrieve(STORED))


@no_llm_call()
def chat_completions_update(seen: Seen) -> None:
    """chat.completions.update(): a POST to /chat/completions/{id}."""
    need(client().chat.completions, "update")
    seen.obj("completion", client().chat.completions.update(STORED, metadata={"topic": "tests"}))


@no_llm_call()
def chat_completions_delete(seen: Seen) -> None:
    """chat.completions.delete(): DELETE /chat/completions/{id}."""
    need(client().chat.completions, "delete")
    seen.obj("deleted", client().chat.completions.delete(STORED))


@no_llm_call()
def chat_completions_messages_list(seen: Seen) -> None:
    """chat.completions.messages.list()."""
    need(client().chat.completions, "messages")
    seen.obj("messages", client().chat.completions.messages.list(STORED))


@no_llm_call()
async def chat_completions_update_async(seen: Seen) -> None:
    """chat.completions.update(), async."""
    need(aclient().chat.completions, "update")
    seen.obj("completion", await aclient().chat.completions.update(STORED, metadata={"topic": "tests"}))


@no_llm_call()
async def chat_completions_list_async(seen: Seen) -> None:
    """chat.completions.list(), async, with async iteration over every page."""
    need(aclient().chat.completions, "list")
    seen("all", [completion async for completion in aclient().chat.completions.list()])


@no_llm_call()
def chat_completions_retrieve_raw(seen: Seen) -> None:
    """chat.completions.with_raw_response.retrieve(), parsed."""
    need(client().chat.completions, "retrieve")
    seen.obj("completion", client().chat.completions.with_raw_response.retrieve(STORED).parse())


@no_llm_call()
def responses_retrieve(seen: Seen) -> None:
    """responses.retrieve(): GET /responses/{id}."""
    seen.obj("response", client().responses.retrieve(RESPONSE))


@no_llm_call()
def responses_delete(seen: Seen) -> None:
    """responses.delete(): DELETE /responses/{id}."""
    seen("deleted", client().responses.delete(RESPONSE))


@no_llm_call()
def responses_cancel(seen: Seen) -> None:
    """responses.cancel(): a POST to /responses/{id}/cancel."""
    need(client().responses, "cancel")
    seen.obj("response", client().responses.cancel(RESPONSE))


@no_llm_call()
def responses_input_items_list(seen: Seen) -> None:
    """responses.input_items.list()."""
    seen.obj("items", client().responses.input_items.list(RESPONSE))


@no_llm_call()
async def responses_retrieve_async(seen: Seen) -> None:
    """responses.retrieve(), async."""
    seen.obj("response", await aclient().responses.retrieve(RESPONSE))


@no_llm_call()
async def responses_cancel_async(seen: Seen) -> None:
    """responses.cancel(), async."""
    need(aclient().responses, "cancel")
    seen.obj("response", await aclient().responses.cancel(RESPONSE))


@no_llm_call()
def responses_retrieve_streaming_response(seen: Seen) -> None:
    """responses.with_streaming_response.retrieve(), read with json()."""
    with client().responses.with_streaming_response.retrieve(RESPONSE) as response:
        seen("json", response.json())


@no_llm_call()
def models_list(seen: Seen) -> None:
    """models.list()."""
    seen.obj("models", client().models.list())


@no_llm_call()
def models_retrieve(seen: Seen) -> None:
    """models.retrieve()."""
    seen.obj("model", client().models.retrieve("mock-gpt"))


@no_llm_call()
async def models_list_async(seen: Seen) -> None:
    """models.list(), async, iterated."""
    seen("models", [model async for model in aclient().models.list()])


@no_llm_call()
def models_list_raw(seen: Seen) -> None:
    """models.with_raw_response.list(): headers and the parsed page."""
    raw = client().models.with_raw_response.list()
    seen("status", raw.status_code)
    seen.obj("page", raw.parse())


@no_llm_call()
def moderations_create(seen: Seen) -> None:
    """moderations.create()."""
    seen.obj("moderation", client().moderations.create(input="hello"))


@no_llm_call()
async def moderations_create_async(seen: Seen) -> None:
    """moderations.create(), async."""
    seen.obj("moderation", await aclient().moderations.create(input=["hello", "again"]))


@no_llm_call()
def not_found_path(seen: Seen) -> None:
    """A GET on an unknown path through client.get(): NotFoundError, and no LLM span."""
    import openai

    seen.call("get", lambda: client().get("/nothing/here", cast_to=openai.BaseModel))
