"""A small client of the OCI distribution API (blobs and manifests), blocking, one keep-alive connection per thread.

Blocking on purpose: callers run it in a thread pool (the agent's fetch, the publisher's upload), where hashing and
zstd release the GIL, and the agent need not load an asyncio HTTP stack. Speaks what every OCI registry speaks
(Distribution, Harbor, the clouds' registries):

    GET  /v2/                                  credentials check
    HEAD /v2/<repo>/blobs/<digest>             does the registry hold it
    POST /v2/<repo>/blobs/uploads/  then  PUT <location>?digest=<digest>     upload one blob (monolithic)
    GET  /v2/<repo>/blobs/<digest>             (a redirect to object storage is followed without our credentials)
    PUT  /v2/<repo>/manifests/<tag>            push a manifest or an index;  GET the same to read it

Credentials are HTTP Basic, or a bearer token from the realm a 401 names (the registry token flow of Harbor and the
clouds), asked with the same Basic credentials and the scope the challenge names.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import re
import ssl
import threading
import urllib.parse

from cloudseat.images.errors import RegistryAuthError, RegistryError, RegistryUnavailable

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_TIMEOUT_S = 30.0
_MAX_REDIRECTS = 3
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    username: str = ""
    password: str = ""


@dataclasses.dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Registry:
    """One registry at url (http://HOST:PORT or https://HOST), with one set of credentials."""

    def __init__(
        self, url: str, credentials: Credentials = Credentials(), *, ca_file: str | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"registry: {url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self._parts = parts
        self._creds = credentials
        self._ssl = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        self._local = threading.local()
        self._token_lock = threading.Lock()
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        # Bytes of blob bodies this client has received (the benchmark's count of what the registry served).
        self.bytes_received = 0
        self._count_lock = threading.Lock()

    # -- the API ------------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise RegistryAuthError or RegistryUnavailable unless the credentials are good."""
        r = self._request("GET", "/v2/", scope="")
        if r.status != 200:
            raise self._error(r, "checking the credentials")

    def has_blob(self, repo: str, digest: str) -> bool:
        r = self._request("HEAD", f"/v2/{repo}/blobs/sha256:{digest}", scope=f"repository:{repo}:pull")
        if r.status == 200:
            return True
        if r.status == 404:
            return False
        raise self._error(r, f"looking for blob {digest[:12]}")

    def put_blob(self, repo: str, data: bytes, digest: str | None = None) -> str:
        """Upload data as a blob; returns its digest (hex)."""
        digest = digest or hashlib.sha256(data).hexdigest()
        scope = f"repository:{repo}:pull,push"
        r = self._request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, body=b"")
        if r.status != 202 or "location" not in r.headers:
            raise self._error(r, "starting an upload")
        location = urllib.parse.urljoin(f"{self.url}/", r.headers["location"])
        parts = urllib.parse.urlsplit(location)
        sep = "&" if parts.query else "?"
        path = f"{parts.path}?{parts.query}{sep}" if parts.query else f"{parts.path}{sep}"
        r = self._request(
            "PUT",
            f"{path}digest=sha256:{digest}",
            scope=scope,
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if r.status != 201:
            raise self._error(r, f"uploading blob {digest[:12]}")
        return digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        r = self._request("GET", f"/v2/{repo}/blobs/sha256:{digest}", scope=f"repository:{repo}:pull")
        if r.status != 200:
            raise self._error(r, f"fetching blob {digest[:12]}")
        with self._count_lock:
            self.bytes_received += len(r.body)
        return r.body

    def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
        r = self._request(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            scope=f"repository:{repo}:pull,push",
            body=body,
            headers={"Content-Type": media_type},
        )
        if r.status != 201:
            raise self._error(r, f"pushing the manifest {repo}:{tag}")
        return hashlib.sha256(body).hexdigest()

    def get_manifest(self, repo: str, reference: str) -> bytes:
        r = self._request(
            "GET", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
            headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        )  # fmt: skip
        if r.status != 200:
            raise self._error(r, f"reading the manifest {repo}:{reference}")
        return r.body

    def tags(self, repo: str) -> list[str]:
        """The repository's tags (none for a repository the registry does not know yet); at most 1,000."""
        r = self._request("GET", f"/v2/{repo}/tags/list?n=1000", scope=f"repository:{repo}:pull")
        if r.status == 404:
            return []
        if r.status != 200:
            raise self._error(r, f"listing the tags of {repo}")
        try:
            tags = json.loads(r.body).get("tags") or []
        except (ValueError, AttributeError):
            raise RegistryError(f"registry {self.url}: the tag list of {repo} is not JSON") from None
        return [str(t) for t in tags]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _error(self, r: Response, doing: str) -> RegistryError:
        detail = _detail(r.body)
        if r.status in (401, 403):
            who = f"user {self._creds.username!r}" if self._creds.username else "no credentials"
            return RegistryAuthError(
                f"registry {self.url} refused {who} ({r.status}) while {doing}: check the registry credentials"
            )
        if r.status >= 500 or r.status == 429:
            return RegistryUnavailable(f"registry {self.url} answered {r.status} while {doing}{detail}")
        return RegistryError(f"registry {self.url} answered {r.status} while {doing}{detail}")

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            host, port = self._parts.hostname or "", self._parts.port
            if self._ssl is not None:
                conn = http.client.HTTPSConnection(host, port, timeout=_TIMEOUT_S, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=_TIMEOUT_S)
            self._local.conn = conn
        return conn

    def _request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        sent = dict(headers or {})
        token = self._tokens.get(scope)
        if token:
            sent["Authorization"] = f"Bearer {token}"
        elif self._creds.username:
            sent["Authorization"] = _basic(self._creds)
        r = self._send(method, path, body, sent)
        challenge = r.headers.get("www-authenticate", "")
        if r.status == 401 and challenge.lower().startswith("bearer ") and self._creds.username:
            self._tokens[scope] = self._token(challenge, scope)
            sent["Authorization"] = f"Bearer {self._tokens[scope]}"
            r = self._send(method, path, body, sent)
        if r.status in (301, 302, 303, 307, 308) and "location" in r.headers and method in ("GET", "HEAD"):
            return _follow(r.headers["location"], method, self._ssl)
        return r

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Response:
        # One retry on a fresh connection: a keep-alive connection the server closed while idle fails the first
        # request made on it, which says nothing about the registry.
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 1 or isinstance(exc, (ConnectionRefusedError, TimeoutError)):
                    raise RegistryUnavailable(f"registry {self.url} cannot be reached: {exc}") from None
        raise AssertionError("unreachable")

    def _token(self, challenge: str, scope: str) -> str:
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.get("realm", "")
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope
        url = f"{realm}?{urllib.parse.urlencode(query)}"
        r = _follow(url, "GET", self._ssl, {"Authorization": _basic(self._creds)})
        if r.status != 200:
            raise self._error(r, "asking the token service")
        try:
            doc = json.loads(r.body)
            token = doc.get("token") or doc.get("access_token")
        except ValueError:
            token = None
        if not isinstance(token, str):
            raise RegistryError(f"registry {self.url}: the token service's answer has no token")
        return token


def _basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def _detail(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return ": " + "; ".join(str(e.get("message", e.get("code", ""))) for e in errors) if errors else ""
    except (ValueError, AttributeError):
        return ""


def _follow(
    url: str, method: str, context: ssl.SSLContext | None, headers: dict[str, str] | None = None
) -> Response:
    """A request to another origin (object storage a registry redirects to, a token service), no keep-alive."""
    for _ in range(_MAX_REDIRECTS):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "",
                parts.port,
                timeout=_TIMEOUT_S,
                context=context or ssl.create_default_context(),
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=_TIMEOUT_S)
        try:
            conn.request(
                method, f"{parts.path}?{parts.query}" if parts.query else parts.path, headers=headers or {}
            )
            resp = conn.getresponse()
            r = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryUnavailable(f"{parts.hostname} cannot be reached: {exc}") from None
        finally:
            conn.close()
        if r.status in (301, 302, 303, 307, 308) and "location" in r.headers:
            url = urllib.parse.urljoin(url, r.headers["location"])
            headers = None  # never carry our credentials to where a redirect points
            continue
        return r
    raise RegistryError(f"{url}: more than {_MAX_REDIRECTS} redirects")
