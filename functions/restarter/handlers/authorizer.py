"""ApiKeyAuthorizerFunction: the REST API's Lambda authorizer (TOKEN type) for `Authorization: Bearer <key>`.

Event: `{"type": "TOKEN", "authorizationToken": "Bearer rk_...", "methodArn": "arn:aws:execute-api:..."}`.

- A valid, enabled key answers an Allow policy for every method and resource of the calling
  stage (`arn:aws:execute-api:<region>:<account>:<api>/<stage>/*/*`), not just `methodArn`: API
  Gateway caches the policy by token, and a policy for one route would deny the key's next call
  to another route until the cache expires. Per-route rules (scopes, tenant) are the API's job,
  from the context: `{"tenant_id", "key_id", "scopes": "read,restart"}`; `principalId` is the
  key id. (Disabling a key therefore takes effect once the authorizer cache TTL has passed.)
- A missing, malformed, unknown or disabled key raises `Exception("Unauthorized")`: that exact
  message is what makes API Gateway answer 401 (a Deny policy would answer 403, any other error
  500). Failures to reach the key table are not turned into 401: they raise, API Gateway answers
  500 and caches nothing, so an outage neither lets anyone in nor tells clients their key is bad.

The key, its secret and its hash are never logged (the event is never logged either, whatever
`POWERTOOLS_LOGGER_LOG_EVENT` says); logs carry the key id and the tenant only.
"""

from __future__ import annotations

from typing import Any, NoReturn

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerTokenEvent,
    HttpVerb,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from restarter.adapters.authorizer_context import authorizer_context
from restarter.domain.auth import Principal, key_id_of, parse_bearer
from restarter.domain.errors import RestarterError
from restarter.observability import logger, metrics
from restarter.wiring import get_api_key_store

UNAUTHORIZED = "Unauthorized"


def authenticate(authorization: str | None) -> Principal:
    """The principal of an `Authorization` value; raises `Exception("Unauthorized")` for anything else."""
    key = parse_bearer(authorization)
    if key is None:
        _deny("no_bearer_token")
    key_id = key_id_of(key)
    if key_id is None:
        _deny("malformed_key")
    try:
        principal = get_api_key_store().lookup(key)
    except RestarterError as exc:
        logger.error("API key lookup failed", key_id=key_id, error_code=exc.code, details=exc.details)
        metrics.add_metric(name="AuthorizationErrors", unit=MetricUnit.Count, value=1)
        raise
    if principal is None:
        _deny("unknown_or_disabled_key", key_id=key_id)
    return principal


def _deny(reason: str, key_id: str | None = None) -> NoReturn:
    if key_id is None:
        logger.info("request not authorized", reason=reason)
    else:
        logger.info("request not authorized", reason=reason, key_id=key_id)
    metrics.add_metric(name="AuthorizationsDenied", unit=MetricUnit.Count, value=1)
    raise Exception(UNAUTHORIZED)  # the exact message API Gateway turns into a 401


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True, log_event=False)
@event_source(data_class=APIGatewayAuthorizerTokenEvent)
def lambda_handler(event: APIGatewayAuthorizerTokenEvent, context: LambdaContext) -> dict[str, Any]:
    route = event.parsed_arn  # a malformed methodArn is a configuration error: it raises (500)
    token = event.get("authorizationToken")
    principal = authenticate(token if isinstance(token, str) else None)
    logger.append_keys(key_id=principal.key_id, tenant_id=principal.tenant_id)
    response = APIGatewayAuthorizerResponse(
        principal_id=principal.key_id,
        region=route.region,
        aws_account_id=route.aws_account_id,
        api_id=route.api_id,
        stage=route.stage,
        context=authorizer_context(principal),
        partition=route.partition,
    )
    response.allow_all_routes(http_method=HttpVerb.ALL.value)
    logger.info("request authorized", scopes=",".join(principal.sorted_scopes()))
    metrics.add_metric(name="AuthorizationsAllowed", unit=MetricUnit.Count, value=1)
    return response.asdict()
