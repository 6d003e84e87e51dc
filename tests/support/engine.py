"""Looking at a real Docker engine while agents change it."""

from __future__ import annotations

from typing import Any

import docker


def labelled_containers(client: docker.DockerClient, labels: list[str], *, all: bool = True) -> list[Any]:  # noqa: A002
    """The containers carrying `labels`, as the SDK's Container objects. The SDK's own list() inspects
    each container after listing and fails on one removed in between - which is what agents do while
    they hand over - so a container gone by then is left out here."""
    found = []
    for entry in client.api.containers(all=all, filters={"label": labels}):
        try:
            found.append(client.containers.get(entry["Id"]))
        except docker.errors.NotFound:
            continue
    return found
