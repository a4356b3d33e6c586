"""Validates recorded scriptd answers against docs/openapi.yaml with openapi-core.

Usage: validate.py SPEC EXCHANGES.json
EXCHANGES.json is a list of {"method", "path", "query", "status", "content_type", "body"}
written by tests/it/openapi_conformance.rs. Prints one line per exchange and exits 1 when any
answer does not match the spec (unknown route, undocumented status, body of the wrong shape).
"""

import json
import sys
from urllib.parse import parse_qs

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse


def main() -> int:
    spec, exchanges = sys.argv[1], sys.argv[2]
    api = OpenAPI.from_file_path(spec)
    failures = 0
    with open(exchanges, encoding="utf-8") as f:
        recorded = json.load(f)
    for ex in recorded:
        args = {k: v[-1] for k, v in parse_qs(ex["query"]).items()}
        request = MockRequest("http://127.0.0.1:8080", ex["method"].lower(), ex["path"], args=args)
        response = MockResponse(
            ex["body"].encode("utf-8"),
            status_code=ex["status"],
            content_type=ex["content_type"],
        )
        label = f'{ex["method"]} {ex["path"]}{"?" + ex["query"] if ex["query"] else ""} -> {ex["status"]}'
        try:
            api.validate_response(request, response)
        except Exception as err:  # every validation error, reported with its detail
            failures += 1
            detail = "; ".join(str(e) for e in getattr(err, "schema_errors", []) or [])
            print(f"FAIL {label}: {type(err).__name__}: {err} {detail}")
            print(f"     body: {ex['body'][:400]}")
        else:
            print(f"ok   {label}")
    print(f"{len(recorded) - failures} of {len(recorded)} answers match {spec}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
