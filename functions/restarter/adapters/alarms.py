"""CloudWatch alarms: the tags of an alarm (`restarter:cluster` maps an alarm to its cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from restarter.adapters.aws_errors import error_code, translated

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient


# An alarm that is gone (or an ARN that is not an alarm's) simply has no tags for us.
_NO_TAGS_CODES = frozenset({"ResourceNotFound", "ResourceNotFoundException", "InvalidParameterValue"})


class AlarmTags:
    def __init__(self, client: CloudWatchClient) -> None:
        self._client = client

    def tags(self, alarm_arn: str | None) -> dict[str, str]:
        if not alarm_arn or ":alarm:" not in alarm_arn:
            return {}
        try:
            response = self._client.list_tags_for_resource(ResourceARN=alarm_arn)
        except ClientError as exc:
            if error_code(exc) in _NO_TAGS_CODES:
                return {}
            with translated("cloudwatch:ListTagsForResource"):
                raise
        return {str(t["Key"]): str(t["Value"]) for t in response.get("Tags", [])}
