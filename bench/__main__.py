"""`python -m bench [NAME ...]`: run the benchmarks (all by default) and print their figures."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHES = {
    "agent-footprint": "bench.agent_footprint",
    "agent-verify": "bench.agent_verify",
    "agent-apply": "bench.agent_apply",
    "agent-soak": "bench.agent_soak",
    "controller-ingest": "bench.controller_ingest",
    "fleet-sim": "bench.fleet_sim",  # also prints controller-ingest's figures (runs it after the simulation)
    "faults": "bench.faults",  # the fault suite: what was expected, what was seen, figures
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=[*BENCHES, []], help="benchmarks to run (default: all)")
    args, extra = parser.parse_known_args()  # options such as --quick are the benchmarks' own
    for name in args.names or list(BENCHES):
        print(f"\n=== {name} ===", flush=True)
        sys.argv = [f"bench {name}", *extra]  # each benchmark's own argument parser sees its options, not our names
        importlib.import_module(BENCHES[name]).main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
