"""A minimal Kubernetes API client for the lab (Python standard library only).

Bearer-token authentication, TLS verified against the lab's CA, JSON in and
out, and watch streams. The lab's node agent and lab.py use it; everything the
lab changes in the cluster otherwise goes through kubectl.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from typing import Any, Iterator


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str):
        self.status = status
        self.body = body
        msg = body
        try:
            msg = json.loads(body).get("message", body)
        except ValueError:
            pass
        super().__init__(f"{method} {path}: HTTP {status}: {msg}")


class Api:
    def __init__(self, server: str, token: str, ca_file: str, timeout: float = 10.0):
        u = urllib.parse.urlsplit(server)
        self.host, self.port = u.hostname or "", u.port or 443
        self.token = token
        self.ctx = ssl.create_default_context(cafile=ca_file)
        self.timeout = timeout

    def _conn(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout or self.timeout)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                query: dict[str, Any] | None = None) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn = self._conn(None)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status >= 300:
            raise ApiError(resp.status, raw, method, path)
        return json.loads(raw) if raw else None

    def raw(self, path: str) -> tuple[int, str]:
        """GET returning (status, body text): for /readyz and the like."""
        conn = self._conn(None)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

    def patch_merge(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 60,
              **query: Any) -> Iterator[dict[str, Any]]:
        """Yields watch events ({"type": ..., "object": ...}) until the server closes."""
        q = {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": str(timeout_seconds),
             "allowWatchBookmarks": "true", **query}
        conn = self._conn(timeout_seconds + 15)
        try:
            conn.request("GET", path + "?" + urllib.parse.urlencode(q),
                         headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
            resp = conn.getresponse()
            if resp.status >= 300:
                raise ApiError(resp.status, resp.read().decode(errors="replace"), "WATCH", path)
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()
