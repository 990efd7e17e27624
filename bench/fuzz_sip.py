"""The long fuzz run: the SIP parser, the SDP parser and the transaction layer behind the
transport (the targets CI runs a few hundred times in tests/sip/test_fuzz.py), each for many
inputs. Prints inputs tried, crashes (distinct by exception type and place) and the rate, with
the run's time as a ratio of Hypothesis generating as many inputs for a target that does nothing
(Hypothesis, not the target, sets the pace when that ratio is near 1).

    python3 bench/fuzz_sip.py [--examples 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.sip import fuzz_targets  # noqa: E402


def fuzz(
    strategy: st.SearchStrategy[Any], target: Callable[[Any], object], examples: int
) -> tuple[int, Counter[str], float, dict[str, Any]]:
    """(inputs tried, crashes by signature, seconds, first input per signature)."""
    tried = 0
    crashes: Counter[str] = Counter()
    first: dict[str, Any] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        nonlocal tried
        tried += 1
        try:
            target(value)
        except Exception as exc:  # noqa: BLE001 - a crash is counted, not raised: the run goes on
            where = traceback.extract_tb(exc.__traceback__)[-1]
            signature = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            crashes[signature] += 1
            first.setdefault(signature, value)

    started = time.perf_counter()
    run()
    return tried, crashes, time.perf_counter() - started, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000, help="inputs per target")
    args = parser.parse_args()
    targets: list[tuple[str, st.SearchStrategy[Any], Callable[[Any], object], int]] = [
        ("SIP parser", fuzz_targets.sip_inputs, fuzz_targets.parse_target, args.examples),
        ("SDP parser", fuzz_targets.sdp_inputs, fuzz_targets.sdp_target, args.examples),
        # Each input is up to 8 datagrams plus every timer run out: a tenth as many.
        (
            "transactions via SipService",
            fuzz_targets.exchanges,
            fuzz_targets.transport_target,
            max(1, args.examples // 10),
        ),
    ]
    total_crashes = 0
    for name, strategy, target, examples in targets:
        fuzz(strategy, lambda _: None, min(examples, 200))  # Hypothesis warms up outside both
        _, _, reference_seconds, _ = fuzz(strategy, lambda _: None, examples)
        tried, crashes, seconds, first = fuzz(strategy, target, examples)
        print(
            f"{name}: {tried:,} inputs in {seconds:.1f} s ({tried / seconds:,.0f}/s, "
            f"{seconds / reference_seconds:.2f}x the time of generation alone), "
            f"{sum(crashes.values())} crashes"
        )
        for signature, count in crashes.most_common():
            print(f"  {count} x {signature}; first input {first[signature]!r:.300}")
        total_crashes += sum(crashes.values())
    sys.exit(1 if total_crashes else 0)


if __name__ == "__main__":
    main()
