"""Errors of the agent. What the caller does with them:

    AgentError
     +-- Transient            retry the pass later with backoff; nothing is recorded as failed
     |    +-- EngineUnavailable   the Docker socket does not answer
     |    +-- RegistryUnavailable the registry (or the engine's pull from it) is unreachable
     |    +-- ImageVanished       a pulled image disappeared before use; the next pass pulls again
     +-- Terminal             record a failure for this app's spec; do not retry until the spec changes
     |    +-- ImageRefused        verify or pull refused the image (digest, platform, size, not found)
     |    +-- ContainerRefused    the engine refused to create or start the container
     +-- ConfigError          the agent's own configuration is unusable; exit with a clear message

oci.errors.OciError carries its own `retryable` flag and is translated into these at the executor.
"""

from __future__ import annotations


class AgentError(Exception):
    pass


class Transient(AgentError):
    pass


class EngineUnavailable(Transient):
    pass


class RegistryUnavailable(Transient):
    pass


class ImageVanished(Transient):
    pass


class Terminal(AgentError):
    pass


class ImageRefused(Terminal):
    pass


class ContainerRefused(Terminal):
    pass


class ConfigError(AgentError):
    pass
