"""Game images' errors: one root, each class's docstring its default message.

    ImageError
    ├── ManifestError        a manifest (or a tree being published) breaks a rule; names the field
    ├── ChunkCorrupt         fetched bytes do not match their digest (they are dropped and fetched again)
    ├── RegistryError        the registry refused or failed a request
    │   ├── RegistryAuthError      wrong or missing credentials, or not allowed (401/403)
    │   └── RegistryUnavailable    cannot be reached now (connection refused, reset, 5xx); worth retrying
    └── InstallError         the host could not install the image (disk full, budget too small); says why

The publisher and the agent catch ImageError at their edges: the publisher prints its message as one line, the
agent reports it with the pre-warm so the provider sees why.
"""

from __future__ import annotations


class ImageError(Exception):
    """game image error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ManifestError(ImageError):
    """The image manifest is invalid."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class ChunkCorrupt(ImageError):
    """A chunk's bytes do not match its digest."""


class RegistryError(ImageError):
    """The registry refused the request."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials."""


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached."""


class InstallError(ImageError):
    """The image could not be installed."""
