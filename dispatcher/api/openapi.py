"""Print the API's OpenAPI document: ``python -m dispatcher.api.openapi > docs/openapi.json``.

The document does not depend on the database: the runtime given to the router is never used
while the schema is generated.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def document() -> dict[str, Any]:
    from dispatcher.api import create_api_app

    doc: dict[str, Any] = create_api_app(runtime=None).openapi()
    return doc


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
