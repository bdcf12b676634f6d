"""Write the API's OpenAPI document to docs/openapi.json (a test fails when they differ).

.venv/bin/python scripts/export_openapi.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

from restarter.handlers.api.app import openapi_document

TARGET = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def main() -> int:
    document = json.dumps(json.loads(openapi_document()), indent=2, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != document:
            print(f"{TARGET} is out of date: run scripts/export_openapi.py", file=sys.stderr)
            return 1
        print(f"{TARGET} is up to date")
        return 0
    TARGET.write_text(document)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
