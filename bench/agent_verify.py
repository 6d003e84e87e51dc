"""What checking the controller's signature costs the agent per desired state, beside the unsigned path.

Both paths run the agent's own intake (decode, validate, compare with the accepted document, verify)
on the same documents - three apps, the size a real board gets - in fresh processes of an agent-only
installation (the board's view: no `cryptography`, only the standard-library verifier). Figures: time
per document (median and p95) and the process's resident memory after the run against before the first
document. Documents are signed here, in the benchmark's process, with the controller's own signer.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.agentvenv import agent_executable
from tinyfleet.controller.signing import Signer
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy, encode

DOCUMENTS = 300
DEVICE = "pi-bench"

# Runs inside the agent-only venv: intake of every document in order, timing each one.
PROBE = r"""
import json, sys, time
from pathlib import Path
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
from tinyfleet.agent.intake import intake
from tinyfleet.agent.state import AgentState
from tinyfleet.protocol.signing import PublicKey
docs = [bytes.fromhex(x) for x in json.loads(Path(sys.argv[1]).read_text())]
key = PublicKey.parse(sys.argv[2]) if sys.argv[2] != "-" else None
state, times = AgentState(), []
before = rss()
for doc in docs:
    t = time.perf_counter()
    verdict = intake(doc, state, "pi-bench", key)
    times.append(time.perf_counter() - t)
    assert verdict.outcome == "accepted", verdict.reason
    state = verdict.state
print(json.dumps({"times": times, "rss_before": before, "rss_after": rss()}))
"""


def documents(signer: Signer, signed: bool) -> list[str]:
    out = []
    for generation in range(1, DOCUMENTS + 1):
        apps = tuple(AppSpec(f"app-{i}", f"registry.example.com:5000/acme/app{i}@sha256:{generation + i:064x}",
                             max_bytes=1_000_000, env=(("SITE", "north-3"), ("LEVEL", str(i))),
                             health=HealthPolicy(5, 90)) for i in range(3))
        desired = DesiredState(DEVICE, generation, apps, issued_at=1_800_000_000.0 + generation)
        out.append(encode(desired, signer.sign(desired) if signed else None).hex())
    return out


def run(python: Path, docs: list[str], key: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(docs, f)
    try:
        done = subprocess.run([str(python), "-c", PROBE, f.name, key], capture_output=True, text=True, check=True)
    finally:
        Path(f.name).unlink()
    result = json.loads(done.stdout)
    times = sorted(result["times"][1:])  # the first document also pays for first-use set-up: reported apart
    return {"first_ms": result["times"][0] * 1000, "median_ms": statistics.median(times) * 1000,
            "p95_ms": times[int(len(times) * 0.95)] * 1000,
            "rss_growth_kib": (result["rss_after"] - result["rss_before"]) / 1024,
            "rss_mib": result["rss_after"] / 2**20}


def main() -> None:
    python = agent_executable().parent / "python"
    signer = Signer.generate()
    unsigned = run(python, documents(signer, False), "-")
    signed = run(python, documents(signer, True), str(signer.public))
    print(f"{DOCUMENTS} desired states (3 apps each) through the agent's intake, agent-only install, x86-64 "
          f"{sys.version.split()[0]}:")
    for name, r in (("unsigned (baseline)", unsigned), ("signed, verified", signed)):
        print(f"  {name:20} median {r['median_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms  first {r['first_ms']:.1f} ms  "
              f"RSS {r['rss_mib']:.1f} MiB (+{r['rss_growth_kib']:.0f} KiB over the run)")
    extra, ratio = signed["median_ms"] - unsigned["median_ms"], signed["median_ms"] / unsigned["median_ms"]
    print(f"verification costs {extra:.2f} ms per desired state ({ratio:.1f}x the unsigned intake) and "
          f"{signed['rss_mib'] - unsigned['rss_mib']:+.2f} MiB of resident memory")
