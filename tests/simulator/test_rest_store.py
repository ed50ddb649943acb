"""The simulator's pure Conversations store: pagination, cursors, bounds, normalization, fault knobs."""

from __future__ import annotations

from typing import Any

import pytest

from relay.simulator.rest_store import ConversationApiError, ConversationStore


def _store_with(count: int) -> tuple[ConversationStore, str, list[str]]:
    store = ConversationStore(clock=lambda: 1_700_000_000.5)
    conversation_id = store.create_conversation()["id"]
    ids = [store.add_item(conversation_id, {"type": "message", "role": "user",
                                            "content": [{"type": "input_text", "text": str(n)}]})["id"]
           for n in range(count)]
    return store, conversation_id, ids


def _walk(store: ConversationStore, conversation_id: str, *, limit: int, order: str) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = store.list_items(conversation_id, limit=limit, order=order, after=after)
        seen.extend(item["id"] for item in page["data"])
        if not page["has_more"]:
            return seen
        after = page["last_id"]


def test_create_conversation_has_the_openai_shape() -> None:
    store = ConversationStore(clock=lambda: 1_700_000_000.9)
    conversation = store.create_conversation(metadata={"k": "v"})
    assert conversation["object"] == "conversation"
    assert conversation["id"].startswith("conv_")
    assert conversation["created_at"] == 1_700_000_000
    assert conversation["metadata"] == {"k": "v"}
    assert store.get_conversation(conversation["id"]) == conversation


def test_list_defaults_to_twenty_newest_first() -> None:
    store, conversation_id, ids = _store_with(25)
    page = store.list_items(conversation_id)
    assert [item["id"] for item in page["data"]] == ids[::-1][:20]
    assert page["object"] == "list"
    assert page["first_id"] == ids[-1] and page["last_id"] == ids[5] and page["has_more"] is True


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_cursor_walk_returns_every_item_once_in_order(order: str) -> None:
    store, conversation_id, ids = _store_with(250)
    expected = ids if order == "asc" else ids[::-1]
    assert _walk(store, conversation_id, limit=7, order=order) == expected


def test_last_full_page_reports_no_more() -> None:
    store, conversation_id, ids = _store_with(40)
    page = store.list_items(conversation_id, limit=20, order="asc", after=ids[19])
    assert [item["id"] for item in page["data"]] == ids[20:]
    assert page["has_more"] is False


def test_empty_conversation_lists_nothing_with_null_cursors() -> None:
    store, conversation_id, _ = _store_with(0)
    assert store.list_items(conversation_id) == {"object": "list", "data": [], "first_id": None,
                                                 "last_id": None, "has_more": False}


@pytest.mark.parametrize("limit", [0, 101, -1, True])
def test_limit_outside_one_to_hundred_is_rejected(limit: int) -> None:
    store, conversation_id, _ = _store_with(1)
    with pytest.raises(ConversationApiError) as caught:
        store.list_items(conversation_id, limit=limit)
    assert caught.value.status == 400 and caught.value.param == "limit"
    assert "between 1 and 100" in caught.value.message


def test_limit_bounds_one_and_hundred_are_accepted() -> None:
    store, conversation_id, _ = _store_with(150)
    assert len(store.list_items(conversation_id, limit=1)["data"]) == 1
    assert len(store.list_items(conversation_id, limit=100)["data"]) == 100


def test_unknown_order_is_rejected() -> None:
    store, conversation_id, _ = _store_with(1)
    with pytest.raises(ConversationApiError) as caught:
        store.list_items(conversation_id, order="sideways")
    assert caught.value.status == 400 and caught.value.param == "order"


def test_unknown_after_cursor_is_a_bad_request() -> None:
    store, conversation_id, _ = _store_with(3)
    with pytest.raises(ConversationApiError) as caught:
        store.list_items(conversation_id, after="msg_nope")
    assert caught.value.status == 400 and caught.value.param == "after"


def test_unknown_conversation_and_item_are_not_found() -> None:
    store, conversation_id, _ = _store_with(1)
    with pytest.raises(ConversationApiError) as conversation:
        store.list_items("conv_missing")
    with pytest.raises(ConversationApiError) as item:
        store.get_item(conversation_id, "msg_missing")
    assert conversation.value.status == 404 and "conv_missing" in conversation.value.message
    assert item.value.status == 404 and "msg_missing" in item.value.message


def test_add_item_with_a_known_id_replaces_it_in_place() -> None:
    store, conversation_id, ids = _store_with(3)
    store.add_item(conversation_id, {"id": ids[1], "type": "message", "role": "user", "content": [],
                                     "status": "incomplete"})
    page = store.list_items(conversation_id, order="asc")
    assert [item["id"] for item in page["data"]] == ids
    assert page["data"][1]["status"] == "incomplete"


def test_add_item_after_previous_item_id_inserts_there() -> None:
    store, conversation_id, ids = _store_with(3)
    first = store.add_item(conversation_id, {"id": "item_root", "type": "message", "role": "user",
                                             "content": []}, previous_item_id="root")
    middle = store.add_item(conversation_id, {"type": "function_call_output", "call_id": "c", "output": "{}"},
                            previous_item_id=ids[0])
    order = [item["id"] for item in store.list_items(conversation_id, order="asc")["data"]]
    assert order == [first["id"], ids[0], middle["id"], ids[1], ids[2]]
    assert middle["id"].startswith("item_")


def test_add_item_after_unknown_previous_item_is_rejected() -> None:
    store, conversation_id, _ = _store_with(1)
    with pytest.raises(ConversationApiError) as caught:
        store.add_item(conversation_id, {"type": "message", "role": "user", "content": []},
                       previous_item_id="item_missing")
    assert caught.value.status == 400


def test_stored_items_are_copies_not_aliases() -> None:
    store, conversation_id, _ = _store_with(0)
    original: dict[str, Any] = {"type": "message", "role": "user",
                                "content": [{"type": "input_text", "text": "a"}]}
    stored = store.add_item(conversation_id, original)
    original["content"][0]["text"] = "changed"
    stored["content"][0]["text"] = "changed too"
    assert store.get_item(conversation_id, stored["id"])["content"][0]["text"] == "a"


def test_create_items_turns_easy_messages_into_message_items() -> None:
    store, conversation_id, _ = _store_with(0)
    created = store.create_items(conversation_id, [{"role": "user", "content": "hi"},
                                                   {"role": "assistant", "content": "hello"}])
    user, assistant = created["data"]
    assert user["type"] == "message" and user["status"] == "completed"
    assert user["content"] == [{"type": "input_text", "text": "hi"}]
    assert assistant["content"] == [{"type": "output_text", "text": "hello", "annotations": []}]
    assert user["id"].startswith("msg_")


@pytest.mark.parametrize("items", [
    [], "x", [1], [{"role": "robot", "content": "x"}], [{"role": "user", "content": 5}],
    [{"role": "user", "content": [{"text": "no type"}]}], [{"type": 7}], [{"type": "message", "id": ""}],
    [{"role": "user", "content": "x"}] * 21,
])
def test_create_items_rejects_garbage(items: object) -> None:
    store, conversation_id, _ = _store_with(0)
    with pytest.raises(ConversationApiError) as caught:
        store.create_items(conversation_id, items)
    assert caught.value.status == 400
    assert store.item_count(conversation_id) == 0


@pytest.mark.parametrize("metadata", ["x", {"k": 1}, {str(n): "v" for n in range(17)}, {"k" * 65: "v"},
                                      {"k": "v" * 513}])
def test_bad_metadata_is_rejected(metadata: object) -> None:
    store = ConversationStore()
    with pytest.raises(ConversationApiError) as caught:
        store.create_conversation(metadata=metadata)  # type: ignore[arg-type]
    assert caught.value.status == 400 and caught.value.param == "metadata"


def test_delete_item_returns_the_conversation_and_removes_it() -> None:
    store, conversation_id, ids = _store_with(2)
    answer = store.delete_item(conversation_id, ids[0])
    assert answer["id"] == conversation_id and answer["object"] == "conversation"
    assert [item["id"] for item in store.list_items(conversation_id)["data"]] == [ids[1]]


def test_delete_conversation_answers_deleted_and_forgets_it() -> None:
    store, conversation_id, _ = _store_with(1)
    assert store.delete_conversation(conversation_id) == {"id": conversation_id,
                                                          "object": "conversation.deleted", "deleted": True}
    with pytest.raises(ConversationApiError):
        store.get_conversation(conversation_id)


def test_injected_faults_answer_the_next_requests_then_stop() -> None:
    store = ConversationStore()
    store.inject_faults(429, 2, retry_after=1)
    first = store.take_fault("GET", "/v1/conversations/x/items", {})
    second = store.take_fault("GET", "/v1/conversations/x/items", {})
    assert first is not None and first.status == 429 and first.headers == {"Retry-After": "1"}
    assert second is not None and second.status == 429
    assert store.take_fault("GET", "/v1/conversations/x/items", {}) is None


def test_query_fault_knob_fails_the_first_n_identical_requests() -> None:
    store = ConversationStore()
    knob = {"sim_fault": "503", "sim_fault_count": "2"}
    answers = [store.take_fault("GET", "/v1/conversations/c/items", knob) for _ in range(3)]
    assert [a.status if a else None for a in answers] == [503, 503, None]
    # Another path has its own count.
    other = store.take_fault("GET", "/v1/conversations/d/items", knob)
    assert other is not None and other.status == 503


@pytest.mark.parametrize("knob", [{"sim_fault": "abc"}, {"sim_fault": "200"}, {"sim_fault": "503",
                                  "sim_fault_count": "0"}, {"sim_fault": "429", "sim_retry_after": "-1"}])
def test_bad_fault_knob_values_are_a_bad_request(knob: dict[str, str]) -> None:
    store = ConversationStore()
    with pytest.raises(ConversationApiError) as caught:
        store.take_fault("GET", "/v1/conversations", knob)
    assert caught.value.status == 400


def test_inject_faults_rejects_a_success_status() -> None:
    with pytest.raises(ValueError):
        ConversationStore().inject_faults(200, 1)
