"""The REST API's Lambda authorizer, the hashed API key store and the pure auth rules."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from restarter import wiring
from restarter.adapters.api_keys import ApiKeyStore
from restarter.adapters.authorizer_context import principal_from_authorizer_context
from restarter.domain.auth import (
    ForbiddenError,
    Principal,
    UnauthorizedError,
    hash_key,
    parse_bearer,
    require_scope,
    split_key,
)
from restarter.domain.errors import ConflictError, ProviderError, RequestValidationError
from restarter.handlers import authorizer
from restarter.observability import logger
from restarter.settings import get_settings
from restarter_local.lambdas import LocalLambdaContext
from tests.conftest import load_event

TABLE = "restarter-api-keys"
REGION = "us-east-1"
NOW = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
CONTEXT = LocalLambdaContext("ApiKeyAuthorizerFunction")
STAGE_WILDCARD = "arn:aws:execute-api:us-east-1:123456789012:ymy8tbxw7b/prod/*/*"


def _bearer_key(event_name: str) -> str:
    return str(load_event(event_name)["authorizationToken"]).removeprefix("Bearer ")


GOOD_KEY = _bearer_key("authorizer_token.json")
BAD_KEY = _bearer_key("authorizer_token_bad.json")


def _create_table(client: Any, name: str = TABLE) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "key_hash", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key_hash", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        _create_table(client)
        yield client


@pytest.fixture
def store(dynamodb: Any) -> Iterator[ApiKeyStore]:
    keys = ApiKeyStore(dynamodb, TABLE)
    keys.put_known_key(GOOD_KEY, "tenant_acme", ["read", "restart"], "ci pipeline", now=NOW)
    wiring.use_api_key_store(keys)
    yield keys
    wiring.use_api_key_store(None)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the Powertools logger writes, at DEBUG, as the Lambda would print it."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous_stream = handler.setStream(buffer)
    previous_level = logger.log_level
    logger.setLevel("DEBUG")
    yield buffer
    logger.setLevel(previous_level)
    handler.setStream(previous_stream)


def _event(token: str | None, **overrides: Any) -> dict[str, Any]:
    event = load_event("authorizer_token.json")
    if token is None:
        del event["authorizationToken"]
    else:
        event["authorizationToken"] = token
    event.update(overrides)
    return event


def _assert_unauthorized(event: dict[str, Any]) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$") as raised:
        authorizer.lambda_handler(event, CONTEXT)
    assert type(raised.value) is Exception


# --- the authorizer ---------------------------------------------------------------------------


def test_given_a_valid_key_when_authorizing_then_allows_the_whole_stage_with_tenant_context(
    store: ApiKeyStore,
) -> None:
    result = authorizer.lambda_handler(load_event("authorizer_token.json"), CONTEXT)

    assert result["principalId"] == "0123abcd"
    assert result["policyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [STAGE_WILDCARD]}],
    }
    assert result["context"] == {"tenant_id": "tenant_acme", "key_id": "0123abcd", "scopes": "read,restart"}
    assert all(isinstance(v, str | int | bool) for v in result["context"].values())
    assert principal_from_authorizer_context(result["context"]) == Principal(
        key_id="0123abcd", tenant_id="tenant_acme", scopes=frozenset({"read", "restart"})
    )


def test_given_a_read_only_key_when_authorizing_then_the_context_carries_only_read(store: ApiKeyStore) -> None:
    key, _ = store.create_key("tenant_globex", ["read"], "dashboard", now=NOW)

    result = authorizer.lambda_handler(_event(f"Bearer {key}"), CONTEXT)

    principal = principal_from_authorizer_context(result["context"])
    assert result["context"]["scopes"] == "read"
    assert result["context"]["tenant_id"] == "tenant_globex"
    assert result["principalId"] == principal.key_id
    with pytest.raises(ForbiddenError):
        require_scope(principal, "restart")


def test_given_a_lowercase_scheme_and_padding_when_authorizing_then_the_key_is_accepted(store: ApiKeyStore) -> None:
    result = authorizer.lambda_handler(_event(f"  bearer   {GOOD_KEY}  "), CONTEXT)

    assert result["context"]["key_id"] == "0123abcd"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(f"Bearer {BAD_KEY}", id="unknown key"),
        pytest.param(None, id="missing header"),
        pytest.param("", id="empty header"),
        pytest.param("Bearer ", id="empty token"),
        pytest.param(f"Basic {GOOD_KEY}", id="wrong scheme"),
        pytest.param(GOOD_KEY, id="no scheme"),
        pytest.param("Bearer not-an-api-key", id="malformed key"),
        pytest.param(f"Bearer {GOOD_KEY} extra", id="trailing garbage"),
        pytest.param(f"Bearer {GOOD_KEY[:-20]}", id="truncated secret"),
    ],
)
def test_given_no_valid_key_when_authorizing_then_raises_unauthorized(store: ApiKeyStore, token: str | None) -> None:
    _assert_unauthorized(_event(token))


def test_given_the_bad_sample_event_when_authorizing_then_raises_unauthorized(store: ApiKeyStore) -> None:
    _assert_unauthorized(load_event("authorizer_token_bad.json"))


def test_given_a_disabled_key_when_authorizing_then_raises_unauthorized(store: ApiKeyStore) -> None:
    assert store.disable("0123abcd", now=NOW) is True

    _assert_unauthorized(load_event("authorizer_token.json"))
    assert store.lookup(GOOD_KEY) is None


def test_given_the_key_table_is_unreachable_when_authorizing_then_fails_with_an_error_not_a_401(
    dynamodb: Any,
) -> None:
    wiring.use_api_key_store(ApiKeyStore(dynamodb, "no-such-table"))
    try:
        with pytest.raises(ProviderError) as raised:
            authorizer.lambda_handler(load_event("authorizer_token.json"), CONTEXT)
    finally:
        wiring.use_api_key_store(None)
    assert raised.value.details["aws_error_code"] == "ResourceNotFoundException"


def test_given_no_installed_store_when_authorizing_then_one_is_built_from_settings_once(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create_table(dynamodb, "restarter-api-keys-from-env")
    ApiKeyStore(dynamodb, "restarter-api-keys-from-env").put_known_key(GOOD_KEY, "tenant_env", ["read"])
    monkeypatch.setenv("API_KEYS_TABLE", "restarter-api-keys-from-env")
    get_settings.cache_clear()
    wiring.use_api_key_store(None)
    try:
        result = authorizer.lambda_handler(load_event("authorizer_token.json"), CONTEXT)
        assert wiring.get_api_key_store() is wiring.get_api_key_store()
    finally:
        wiring.use_api_key_store(None)
        get_settings.cache_clear()
    assert result["context"]["tenant_id"] == "tenant_env"


def test_given_any_outcome_when_authorizing_then_logs_never_contain_the_key(
    store: ApiKeyStore,
    log_output: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")  # must not make the authorizer log its event

    authorizer.lambda_handler(load_event("authorizer_token.json"), CONTEXT)
    for event in (load_event("authorizer_token_bad.json"), _event(f"Basic {GOOD_KEY}"), _event("Bearer rk_x")):
        with pytest.raises(Exception, match="Unauthorized"):
            authorizer.lambda_handler(event, CONTEXT)

    logs = log_output.getvalue()
    printed = capsys.readouterr()
    records = [json.loads(line) for line in logs.splitlines()]
    assert any(r.get("message") == "request authorized" and r.get("tenant_id") == "tenant_acme" for r in records)
    assert any(r.get("reason") == "unknown_or_disabled_key" and r.get("key_id") == "0123abcd" for r in records)
    for secret in (GOOD_KEY, BAD_KEY, split_key(GOOD_KEY)[1], split_key(BAD_KEY)[1], hash_key(GOOD_KEY)):  # type: ignore[index]
        assert secret not in logs
        assert secret not in printed.out + printed.err


# --- the key store ----------------------------------------------------------------------------


def test_given_a_new_key_when_created_then_only_its_hash_is_stored(dynamodb: Any) -> None:
    keys = ApiKeyStore(dynamodb, TABLE)

    key, principal = keys.create_key("tenant_acme", ["restart", "read"], "ops", now=NOW)

    parts = split_key(key)
    assert parts is not None and parts[0] == principal.key_id and len(parts[1]) >= 43
    items = dynamodb.scan(TableName=TABLE)["Items"]
    assert len(items) == 1
    stored = json.dumps(items)
    assert key not in stored and parts[1] not in stored
    assert items[0]["key_hash"] == {"S": hash_key(key)}
    assert items[0]["key_id"] == {"S": principal.key_id}
    assert items[0]["tenant_id"] == {"S": "tenant_acme"}
    assert set(items[0]["scopes"]["SS"]) == {"read", "restart"}
    assert items[0]["created_at"] == {"S": "2025-01-15T10:30:00Z"}
    assert items[0]["disabled"] == {"BOOL": False}
    assert keys.lookup(key) == principal


def test_given_a_seeded_known_key_when_scanning_then_the_plaintext_is_absent(store: ApiKeyStore, dynamodb: Any) -> None:
    stored = json.dumps(dynamodb.scan(TableName=TABLE)["Items"])

    assert GOOD_KEY not in stored
    assert split_key(GOOD_KEY)[1] not in stored  # type: ignore[index]
    assert store.lookup(GOOD_KEY) == Principal(
        key_id="0123abcd", tenant_id="tenant_acme", scopes=frozenset({"read", "restart"}), name="ci pipeline"
    )


def test_given_a_key_id_in_use_when_seeding_another_key_with_it_then_conflict(store: ApiKeyStore) -> None:
    with pytest.raises(ConflictError):
        store.put_known_key(BAD_KEY, "tenant_other", ["read"])


def test_given_bad_attributes_when_creating_a_key_then_validation_error(store: ApiKeyStore) -> None:
    with pytest.raises(RequestValidationError):
        store.create_key("tenant_acme", ["admin"], now=NOW)
    with pytest.raises(RequestValidationError):
        store.create_key("tenant_acme", [], now=NOW)
    with pytest.raises(RequestValidationError):
        store.put_known_key("rk_short", "tenant_acme", ["read"])


def test_given_an_unknown_key_id_when_disabling_then_reports_nothing_disabled(store: ApiKeyStore) -> None:
    assert store.disable("ffffffff") is False
    assert store.lookup(GOOD_KEY) is not None


def test_given_a_disabled_known_key_when_seeded_again_then_it_is_enabled(store: ApiKeyStore) -> None:
    store.disable("0123abcd")
    store.put_known_key(GOOD_KEY, "tenant_acme", ["read"])

    principal = store.lookup(GOOD_KEY)
    assert principal is not None and principal.scopes == frozenset({"read"})


# --- the pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("  Bearer\tabc", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic abc", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
    ],
)
def test_given_an_authorization_value_when_parsing_then_only_a_bearer_token_comes_out(
    header: str | None, expected: str | None
) -> None:
    assert parse_bearer(header) == expected


def test_given_a_key_when_hashing_then_it_is_its_sha256_hex() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key(GOOD_KEY) != hash_key(BAD_KEY)


def test_given_a_principal_without_a_scope_when_requiring_it_then_forbidden_403() -> None:
    principal = Principal(key_id="0123abcd", tenant_id="t", scopes=frozenset({"read"}))

    require_scope(principal, "read")
    with pytest.raises(ForbiddenError) as raised:
        require_scope(principal, "restart")

    assert (raised.value.code, raised.value.http_status) == ("FORBIDDEN", 403)
    assert raised.value.details == {"required_scope": "restart", "granted_scopes": ["read"], "key_id": "0123abcd"}


def test_given_an_incomplete_authorizer_context_when_reading_the_principal_then_unauthorized_401() -> None:
    with pytest.raises(UnauthorizedError) as raised:
        principal_from_authorizer_context({"principalId": "0123abcd", "tenant_id": "t"})

    assert (raised.value.code, raised.value.http_status) == ("UNAUTHORIZED", 401)
