"""Private, throw-away instances of the real services tinyfleet talks to - Mosquitto, dockerd, the
registry - plus qemu binfmt and the demo workload's static binaries.

Used by the demo (`python -m sandbox.demo`), the test fixtures and the benchmarks: a source checkout's
dev kit, not part of the installed package. Everything binds to loopback, lives under one directory and is
stopped (processes, mounts, bridge) by `stop()`.
"""
