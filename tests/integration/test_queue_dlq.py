"""QueueRestartFunction end to end on moto SQS: a poison message ends in the dead-letter queue after
its redrive count, a busy cluster's message waits out a backoff and is delivered again."""

from __future__ import annotations

import json
from typing import Any

from restarter.services.restart_intake import accept_restart
from restarter_local.engine import LocalAws
from tests.integration.harness import Seed, failed_ids, handle, restarts_of

# ---------------------------------------------------------------- end to end with SQS and a DLQ


def event_from_received(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping builds from received messages."""
    records = []
    for message in messages:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {
                name: {
                    "stringValue": value.get("StringValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": value["DataType"],
                }
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": queue_arn.split(":")[3],
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        records.append(record)
    return {"Records": records}


class QueuePair:
    """A queue with a redrive policy to a DLQ; `poll` acts as the event source mapping."""

    def __init__(self, aws: LocalAws, name: str, max_receive_count: int) -> None:
        self.sqs = aws.client("sqs")
        self.dlq_url = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.url = self.sqs.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": "60",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}),
            },
        )["QueueUrl"]
        self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def send(self, body: Any, **attributes: str) -> str:
        return str(
            self.sqs.send_message(
                QueueUrl=self.url,
                MessageBody=body if isinstance(body, str) else json.dumps(body),
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
            )["MessageId"]
        )

    def poll(self) -> tuple[list[str], list[str]]:
        """Receive, invoke the handler, delete what succeeded. Returns (received ids, failed ids)."""
        messages = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return [], []
        failed = failed_ids(handle(event_from_received(messages, self.arn)))
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return [m["MessageId"] for m in messages], failed

    def dead_letters(self) -> list[dict[str, Any]]:
        return list(self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10).get("Messages", []))

    def invisible(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_given_a_poison_message_on_a_queue_with_a_dlq_when_polled_then_it_ends_in_the_dlq(
    aws: LocalAws, seed: Seed
) -> None:
    # Given a queue (maxReceiveCount 2, visibility 60 s) with a poison message and a valid one
    cluster = seed()
    queue_pair = QueuePair(aws, "restarter-test-maintenance", max_receive_count=2)
    poison = queue_pair.send({"cluster_id": cluster.id, "timeout_minutes": 600}, priority="maintenance")
    valid = queue_pair.send({"cluster_id": cluster.id, "restart_reason": "Apply system updates"})

    # When the first batch is handled: the valid message is done and deleted, the poison fails
    received, failed = queue_pair.poll()
    assert sorted(received) == sorted([poison, valid]) and failed == [poison]

    # Then, a permanent failure, the poison is visible again at once (not after 60 s) and fails again
    assert queue_pair.poll() == ([poison], [poison])
    assert queue_pair.dead_letters() == []

    # and once its receive count passes maxReceiveCount, SQS moves it to the DLQ
    assert queue_pair.poll() == ([], [])
    [dead] = queue_pair.dead_letters()
    assert dead["MessageId"] == poison
    assert json.loads(dead["Body"])["timeout_minutes"] == 600
    aws.wait_for_executions()
    assert [r.reason for r in restarts_of(aws, cluster.id)] == ["Apply system updates"]


def test_given_a_busy_cluster_on_a_queue_when_polled_then_the_message_waits_out_a_backoff(
    aws: LocalAws, seed: Seed
) -> None:
    cluster = seed()
    assert aws.deps is not None
    aws.agent.set_never_healthy(cluster.instance_ids[0])  # holds the first restart in flight
    accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="ops@example.com")
    queue_pair = QueuePair(aws, "restarter-test-recovery", max_receive_count=2)
    message_id = queue_pair.send({"cluster_id": cluster.id, "force": True}, priority="recovery")

    assert queue_pair.poll() == ([message_id], [message_id])

    # a transient failure: the message stays invisible for its backoff, it is not fast-tracked to the DLQ
    assert queue_pair.poll() == ([], [])
    assert queue_pair.invisible() == 1
    assert queue_pair.dead_letters() == []
