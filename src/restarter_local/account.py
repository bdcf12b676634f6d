"""The account and region the embedded AWS runs as: moto's default account, and the region
every client, ARN and Lambda context of the local runtime names."""

from __future__ import annotations

REGION = "us-east-1"
ACCOUNT = "123456789012"
