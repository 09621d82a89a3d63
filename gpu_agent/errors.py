"""The agent's exceptions: one root.

    AgentError
    ├── ConfigError        the host config file is missing a field or has a bad one (names the field)
    └── RegistrationError  the broker refused the registration for good (unknown site, wrong provider)

Workload and media errors have their own roots in gpu_agent.workloads and gpu_agent.media, where they are caught
and turned into session events; nothing of theirs reaches the top of the program.
"""

from __future__ import annotations


class AgentError(Exception):
    """cloudseat agent error."""


class ConfigError(AgentError):
    """The host config is invalid."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{source}: {field}: {problem}")


class RegistrationError(AgentError):
    """The broker refused this host."""
