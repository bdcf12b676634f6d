"""The API key store and the idempotency layer against DynamoDB's real service model (botocore
Stubber): what they write and read, and how they answer a failed condition."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemAlreadyExistsError
from botocore.stub import ANY, Stubber

from restarter.adapters.api_keys import ApiKeyStore
from restarter.adapters.idempotency import IdempotencyTable
from restarter.domain.errors import ConflictError, ProviderError
from tests.contract import dynamodb_stubs as ddb
from tests.contract.dynamodb_stubs import NOW, STAMP, Call, get_item, page, put_item, stub_clients

CCF = "ConditionalCheckFailedException"


@pytest.fixture
def stubbed() -> Iterator[Callable[[str], tuple[Any, Stubber]]]:
    yield from stub_clients()


# ---------------------------------------------------------------- API keys

DISABLE = {
    **{"TableName": "ApiKeys", "Key": {"key_hash": {"S": ddb.KEY_HASH}}},
    **{"UpdateExpression": "SET disabled = :t, disabled_at = :at", "ConditionExpression": "attribute_exists(key_hash)"},
    "ExpressionAttributeValues": {":t": {"BOOL": True}, ":at": {"S": STAMP}},
}
BY_HASH = {"key_hash": {"S": ddb.KEY_HASH}}
NEW_KEY = {"ConditionExpression": "attribute_not_exists(key_hash)"}
TAKEN = {"key_hash": {"S": "0" * 64}}  # another key with the same id
KEY_CALLS: dict[str, tuple[Callable[[Any], Any], list[Call], Any]] = {
    "put_known_key": (
        lambda c: ApiKeyStore(c, "ApiKeys").put_known_key(ddb.API_KEY, "t1", ["restart", "read"], "ci", now=NOW),
        [("scan", ddb.KEY_SCAN, page(BY_HASH)), put_item("ApiKeys", ddb.KEY_ITEM)],
        ddb.PRINCIPAL,
    ),
    "create_key": (
        lambda c: ApiKeyStore(c, "ApiKeys").create_key("t1", ["read", "restart"], "ci", now=NOW),
        [("scan", ddb.KEY_SCAN, page()), put_item("ApiKeys", ddb.KEY_ITEM, **NEW_KEY)],
        (ddb.API_KEY, ddb.PRINCIPAL),
    ),
    "create_key(id taken: a new key)": (
        lambda c: ApiKeyStore(c, "ApiKeys").create_key("t1", ["read", "restart"], "ci", now=NOW),
        [
            ("scan", ddb.KEY_SCAN, page(TAKEN)),
            ("scan", ddb.KEY_SCAN, page()),
            put_item("ApiKeys", ddb.KEY_ITEM, **NEW_KEY),
        ],
        (ddb.API_KEY, ddb.PRINCIPAL),
    ),
    "lookup": (
        lambda c: ApiKeyStore(c, "ApiKeys").lookup(ddb.API_KEY),
        [get_item("ApiKeys", BY_HASH, ddb.KEY_ITEM, consistent=False)],
        ddb.PRINCIPAL,
    ),
    "lookup(disabled)": (
        lambda c: ApiKeyStore(c, "ApiKeys").lookup(ddb.API_KEY),
        [get_item("ApiKeys", BY_HASH, {**ddb.KEY_ITEM, "disabled": {"BOOL": True}}, consistent=False)],
        None,
    ),
    "lookup(malformed: never asks)": (lambda c: ApiKeyStore(c, "ApiKeys").lookup("rk_nope"), [], None),
    "disable": (
        lambda c: ApiKeyStore(c, "ApiKeys").disable("0a1b2c3d", now=NOW),
        [("scan", ddb.KEY_SCAN, page(BY_HASH)), ("update_item", DISABLE, {})],
        True,
    ),
    "disable(unknown id)": (
        lambda c: ApiKeyStore(c, "ApiKeys").disable("0a1b2c3d", now=NOW),
        [("scan", ddb.KEY_SCAN, page())],
        False,
    ),
}


@pytest.mark.parametrize(("run", "calls", "result"), KEY_CALLS.values(), ids=KEY_CALLS.keys())
def test_given_realistic_answers_when_the_key_store_runs_then_only_hashes_are_asked_for_and_written(
    stubbed: Any, monkeypatch: pytest.MonkeyPatch, run: Callable[[Any], Any], calls: list[Call], result: Any
) -> None:
    client, stubber = stubbed("dynamodb")
    monkeypatch.setattr("restarter.adapters.api_keys.new_key", lambda: ddb.API_KEY)
    for method, request, answer in calls:
        stubber.add_response(method, answer, request)

    assert run(client) == result
    stubber.assert_no_pending_responses()


def test_given_a_key_written_meanwhile_when_a_key_is_created_then_a_new_key_is_tried(
    stubbed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, stubber = stubbed("dynamodb")
    monkeypatch.setattr("restarter.adapters.api_keys.new_key", lambda: ddb.API_KEY)
    stubber.add_response("scan", page(), ddb.KEY_SCAN)
    ddb.add_error(client, stubber, put_item("ApiKeys", ddb.KEY_ITEM, **NEW_KEY), CCF)
    stubber.add_response("scan", page(), ddb.KEY_SCAN)
    stubber.add_response("put_item", {}, put_item("ApiKeys", ddb.KEY_ITEM, **NEW_KEY)[1])

    assert ApiKeyStore(client, "ApiKeys").create_key("t1", ["read", "restart"], "ci", now=NOW) == (
        ddb.API_KEY,
        ddb.PRINCIPAL,
    )
    stubber.assert_no_pending_responses()


def test_given_another_key_with_the_id_when_a_known_key_is_put_then_it_is_a_conflict_and_nothing_is_written(
    stubbed: Any,
) -> None:
    client, stubber = stubbed("dynamodb")
    stubber.add_response("scan", page(TAKEN), ddb.KEY_SCAN)

    with pytest.raises(ConflictError) as raised:
        ApiKeyStore(client, "ApiKeys").put_known_key(ddb.API_KEY, "t1", ["read"], now=NOW)

    assert raised.value.details == {"key_id": "0a1b2c3d"}
    stubber.assert_no_pending_responses()


def test_given_a_key_deleted_between_scan_and_update_when_disabled_then_the_failed_condition_is_a_provider_error(
    stubbed: Any,
) -> None:
    client, stubber = stubbed("dynamodb")
    stubber.add_response("scan", page(BY_HASH), ddb.KEY_SCAN)
    ddb.add_error(client, stubber, ("update_item", DISABLE, {}), CCF)

    with pytest.raises(ProviderError) as raised:
        ApiKeyStore(client, "ApiKeys").disable("0a1b2c3d", now=NOW)

    assert raised.value.details == {"operation": "dynamodb:UpdateItem", "aws_error_code": CCF}
    stubber.assert_no_pending_responses()


# ---------------------------------------------------------------- the idempotency layer


def test_given_a_guard_when_its_layer_saves_reads_and_deletes_then_powertools_requests_fit_the_model(
    stubbed: Any,
) -> None:
    """Powertools writes the IdempotencyTable through our client: its requests are contract too."""

    # given the layer of the queue's message guard (one per guard)
    client, stubber = stubbed("dynamodb")
    table = IdempotencyTable(client, "Idempotency")
    layer = table.persistence_layer("restarter.queue.message")
    assert table.persistence_layer("restarter.queue.message") is layer
    assert table.persistence_layer("restarter.queue.request") is not layer
    layer.configure(IdempotencyConfig(event_key_jmespath="message_id"), key_prefix="restarter.queue.message")
    key = {"id": {"S": ddb.Matching(r"restarter\.queue\.message#[0-9a-f]{32}")}}
    generated = {"ConditionExpression": ANY, "ExpressionAttributeNames": ANY, "ExpressionAttributeValues": ANY}
    put = {"TableName": "Idempotency", "Item": ANY, **generated, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
    stubber.add_response("put_item", {}, put)
    update = "SET #response_data = :response_data, #expiry = :expiry, #status = :status"
    names = {"#expiry": "expiration", "#response_data": "data", "#status": "status"}
    stubber.add_response(
        "update_item",
        {},
        {"TableName": "Idempotency", "Key": key, "UpdateExpression": update, "ExpressionAttributeNames": names}
        | {"ExpressionAttributeValues": ANY},
    )
    stored = {
        **{"id": {"S": "restarter.queue.message#0f"}, "expiration": {"N": str(int(time.time()) + 3600)}},
        **{"status": {"S": "COMPLETED"}, "data": {"S": '{"restart_id": "rst_0a1b2c"}'}},
    }
    stubber.add_response("get_item", {"Item": stored}, {"TableName": "Idempotency", "Key": key, "ConsistentRead": True})
    stubber.add_response("delete_item", {}, {"TableName": "Idempotency", "Key": key})
    data = {"message_id": "0f6e3c1a-5b7d-4e2f-9a8c-1d2e3f4a5b6c"}

    # when a guarded call starts, succeeds, is read back and (another time) fails
    layer.save_inprogress(data, remaining_time_in_millis=30_000)
    layer.save_success(data, {"restart_id": "rst_0a1b2c"})
    record = layer.get_record(data)
    layer.delete_record(data, RuntimeError("failed"))

    # then every request passed the model, and the stored answer was read
    assert record is not None
    assert (record.status, record.response_json_as_dict()) == ("COMPLETED", {"restart_id": "rst_0a1b2c"})
    stubber.assert_no_pending_responses()


def test_given_a_completed_record_when_a_guard_saves_in_progress_then_powertools_reads_it_from_all_old(
    stubbed: Any,
) -> None:
    client, stubber = stubbed("dynamodb")
    layer = IdempotencyTable(client, "Idempotency").persistence_layer("restarter.queue.message")
    layer.configure(IdempotencyConfig(event_key_jmespath="message_id"), key_prefix="restarter.queue.message")
    old = {
        **{"id": {"S": "restarter.queue.message#0f"}, "expiration": {"N": str(int(time.time()) + 3600)}},
        **{"status": {"S": "COMPLETED"}, "data": {"S": '{"restart_id": "rst_0a1b2c"}'}},
    }
    ddb.add_error(client, stubber, "put_item", CCF, Item=old)

    with pytest.raises(IdempotencyItemAlreadyExistsError) as raised:
        layer.save_inprogress({"message_id": "m-1"}, remaining_time_in_millis=30_000)

    assert raised.value.old_data_record is not None
    assert raised.value.old_data_record.response_json_as_dict() == {"restart_id": "rst_0a1b2c"}
    stubber.assert_no_pending_responses()
