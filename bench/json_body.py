"""Cost of the bounded body decoder against plain ``json.loads`` on the same bodies.

The decoder scans for nesting depth only when a body has more brackets than the limit, and
walks the decoded value for over-long numbers and lone surrogates. The ratios (bounded / plain)
are the figures to compare across machines.

    python3 bench/json_body.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callrouter.api.json_body import decode_body  # noqa: E402

BODIES = {
    "session (swap script)": json.dumps(
        {
            "pool_key": "pk_" + "x" * 40,
            "visitor_id": "v-1234567890",
            "page_url": "https://www.example.com/landing?utm_source=google&utm_medium=cpc",
            "referrer": "https://www.google.com/",
        }
    ).encode(),
    "form with 50 fields": json.dumps(
        {
            "pool_key": "pk_x",
            "session_id": "018f0000-0000-7000-8000-000000000000",
            "form": "contact",
            "fields": {f"field{i}": "some value " * 4 for i in range(50)},
        }
    ).encode(),
    "60 KB of small objects": json.dumps([{"a": [i, i + 1]} for i in range(4000)]).encode(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'body':<24} {'bytes':>7} {'json.loads µs':>14} {'bounded µs':>11} {'ratio':>6}")
    for name, raw in BODIES.items():
        plain = min(timeit.repeat(lambda raw=raw: json.loads(raw), number=args.repeat // 10 or 1))
        bounded = min(
            timeit.repeat(lambda raw=raw: decode_body(raw), number=args.repeat // 10 or 1)
        )
        per = 1e6 / (args.repeat // 10 or 1)
        print(
            f"{name:<24} {len(raw):>7} {plain * per:>14.1f} {bounded * per:>11.1f} "
            f"{bounded / plain:>6.2f}"
        )


if __name__ == "__main__":
    main()
