"""The embedded image registry: the CNCF Distribution registry (Debian's `docker-registry`), for `scripts/up`, the
tests and the benchmark, started the way the embedded PostgreSQL is (a config written to a directory, a free port on
127.0.0.1, stopped with its owner).

Read and write credentials. Distribution's htpasswd authentication lets any user it knows do anything: it has no
per-user permissions (those need its token authentication and a token service, which is what Harbor provides). The
nearest honest arrangement with Distribution alone is two processes over one storage directory:

    writer  htpasswd with the publisher only                 `cloudseat-images push` talks to it
    reader  htpasswd with the reader only, storage read-only   agents talk to it (maintenance.readonly refuses
                                                               every upload and manifest push)

so the reader's credentials cannot publish and the publisher's are not handed to hosts. In production, point both at
one registry that enforces per-user permissions (docs/images.md).
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

from cloudseat.images.errors import RegistryError
from cloudseat.images.oci import Credentials

BINARY = "docker-registry"
_READY_S = 20.0


@dataclasses.dataclass(frozen=True, slots=True)
class LocalRegistry:
    reader_url: str
    writer_url: str
    reader: Credentials
    writer: Credentials
    root: Path


class RegistryProcesses:
    """Start a writer and a reader over root/data; stop() ends both. Credentials persist in root between runs."""

    def __init__(self, root: Path, *, reader_port: int = 0, writer_port: int = 0) -> None:
        self.root = root
        self._ports = (reader_port, writer_port)
        self._procs: list[subprocess.Popen[bytes]] = []
        self.registry: LocalRegistry | None = None

    def start(self) -> LocalRegistry:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RegistryError(
                f"the image registry needs the '{BINARY}' program (Debian: apt-get install docker-registry; "
                "scripts/system-deps installs it)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        reader = self._credentials("reader")
        writer = self._credentials("publisher")
        urls = []
        for name, creds, readonly, port in (
            ("reader", reader, True, self._ports[0]),
            ("writer", writer, False, self._ports[1]),
        ):
            htpasswd = self.root / f"{name}.htpasswd"
            hashed = bcrypt.hashpw(creds.password.encode(), bcrypt.gensalt(rounds=5)).decode()
            htpasswd.write_text(f"{creds.username}:{hashed}\n")
            port = port or _free_port()
            config = self.root / f"{name}.yml"
            config.write_text(_config(self.root / "data", htpasswd, port, readonly))
            log = open(self.root / f"{name}.log", "ab")
            self._procs.append(
                subprocess.Popen(
                    [binary, "serve", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
                )
            )
            log.close()
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, self._procs, strict=True):
            _wait_ready(url, proc, self.root)
        self.registry = LocalRegistry(urls[0], urls[1], reader, writer, self.root)
        return self.registry

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def stop_reader(self) -> None:
        """Stop the reader alone (a test of a registry that goes away mid-fetch)."""
        proc = self._procs[0]
        proc.terminate()
        proc.wait(timeout=5)

    def start_reader(self) -> None:
        """Start the reader again on its old port."""
        assert self.registry is not None
        binary = shutil.which(BINARY) or BINARY
        log = open(self.root / "reader.log", "ab")
        self._procs[0] = subprocess.Popen(
            [binary, "serve", str(self.root / "reader.yml")], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        _wait_ready(self.registry.reader_url, self._procs[0], self.root)

    def _credentials(self, user: str) -> Credentials:
        path = self.root / f"{user}.password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(18))
            path.chmod(0o600)
        return Credentials(user, path.read_text().strip())


def _config(data: Path, htpasswd: Path, port: int, readonly: bool) -> str:
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: false
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: {str(readonly).lower()}
http:
  addr: 127.0.0.1:{port}
  secret: {secrets.token_hex(16)}
auth:
  htpasswd:
    realm: cloudseat
    path: {htpasswd}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(url: str, proc: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RegistryError(
                f"the image registry exited at start (code {proc.returncode}); see {root}/*.log"
            )
        try:
            urllib.request.urlopen(f"{url}/v2/", timeout=1).close()
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and asking for credentials
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RegistryError(f"the image registry at {url} did not answer within {_READY_S:.0f} s")
