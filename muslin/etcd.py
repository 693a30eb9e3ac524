"""etcd as a small key-value store, in both of the keyspaces flannel has used; shared by the fabric's agent
and the engine's cluster store (``--cluster-store``), which also uses its transactions and leases.

flanneld <= 0.17 (the seed's 0.7) keeps its network in etcd's v2 keyspace; >= 0.18 in v3. In etcd 3.x the
two are separate stores, so ``etcdctl mk`` (v2) and ``etcdctl put`` (v3) configure different networks. The
agent talks to one of them, chosen by a flag or by where the config is found, and says which.

Both implementations fail over across endpoints: a call that cannot reach one member moves on to the
next, and only when every member failed does the caller see StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import h11

log = logging.getLogger(__name__)

CALL_TIMEOUT = 5.0


class StoreError(RuntimeError):
    """etcd could not serve a request; the message says why."""


class StoreUnavailable(StoreError):
    """No endpoint answered."""


class StoreRefused(StoreError):
    """etcd answered but refused the request (bad credentials, no permission, invalid request)."""


class WatchResync(RuntimeError):
    """The watch cannot resume from the requested revision (history compacted): list again."""


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    revision: int  # revision (v3) or index (v2) of the last change to this key
    expires: bool  # False for keys kept without TTL (flannel's reservations)


@dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["put", "delete"]
    key: str
    value: bytes | None
    revision: int
    expires: bool


@dataclass(frozen=True)
class Credentials:
    """etcd user and password (``--etcd-username``/``--etcd-password``); empty: no authentication."""

    username: str = ""
    password: str = field(default="", repr=False)  # kept out of logs

    def __bool__(self) -> bool:
        return bool(self.username)


@dataclass(frozen=True)
class TlsFiles:
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def __bool__(self) -> bool:
        return bool(self.cafile or self.certfile or self.keyfile)


class KeyValueStore(Protocol):
    api: str  # "v3" or "v2", for logs

    async def get(self, key: str) -> Entry | None: ...

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        """Entries under prefix and the store revision they were read at."""
        ...

    async def create(self, key: str, value: bytes, ttl: int | None) -> bool:
        """Atomically create key; False if it already exists."""
        ...

    async def put(self, key: str, value: bytes, ttl: int | None, prev_revision: int | None = None) -> bool:
        """Write key; with prev_revision only if the key is still at that revision (else False)."""
        ...

    async def delete(self, key: str) -> None: ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Events under prefix from start_revision on; raises WatchResync or StoreUnavailable."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"etcd endpoint {url!r} is not an http:// or https:// URL")
        return cls(parts.scheme, parts.hostname, parts.port or 2379)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_endpoints(text: str) -> list[Endpoint]:
    endpoints = [Endpoint.parse(u) for u in text.split(",") if u.strip()]
    if not endpoints:
        raise ValueError("no etcd endpoints given")
    return endpoints


class _Rotation:
    """The endpoint in use, and moving past one that failed."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self.index = 0

    @property
    def current(self) -> Endpoint:
        return self.endpoints[self.index]

    def advance(self, error: BaseException) -> None:
        failed = self.current
        self.index = (self.index + 1) % len(self.endpoints)
        if len(self.endpoints) > 1:
            log.warning("etcd endpoint %s failed (%s); trying %s", failed, str(error) or type(error).__name__,
                        self.current)


# ---------------------------------------------------------------------------------------------- HTTP

_CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, h11.ProtocolError, asyncio.IncompleteReadError)


def _ssl_context(endpoints: list[Endpoint], tls: TlsFiles) -> ssl.SSLContext | None:
    if not any(e.scheme == "https" for e in endpoints):
        return None
    context = ssl.create_default_context(cafile=tls.cafile)
    if tls.certfile:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    return context


class _Exchange:
    """One HTTP/1.1 request and its response on a connection of its own (h11 frames it), so a long poll
    or a stream is cancelled by closing it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, ep: Endpoint, context: ssl.SSLContext | None) -> _Exchange:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(ep.host, ep.port, ssl=context if ep.scheme == "https" else None), CALL_TIMEOUT)
        return cls(reader, writer)

    def send(self, ep: Endpoint, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        headers = [("Host", f"{ep.host}:{ep.port}"), ("Connection", "close"), ("Content-Length", str(len(body))),
                   *headers]
        self.writer.write(self.conn.send(h11.Request(method=method, target=target, headers=headers))
                          + self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage()))

    async def _next(self, timeout: float | None) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            self.conn.receive_data(data)
            if not data and self.conn.their_state is not h11.DONE:
                raise asyncio.IncompleteReadError(b"", None)

    async def response(self, timeout: float | None) -> h11.Response:
        await self.writer.drain()
        while True:
            event = await self._next(timeout)
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise asyncio.IncompleteReadError(b"", None)

    async def chunk(self, timeout: float | None) -> bytes | None:
        """The next piece of the body; None at its end."""
        while True:
            event = await self._next(timeout)
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return None

    async def body(self, timeout: float | None) -> bytes:
        chunks = []
        while (piece := await self.chunk(timeout)) is not None:
            chunks.append(piece)
        return b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------------------------- v3

def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with prefix (etcd's range_end for a prefix)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


@dataclass(frozen=True)
class Absent:
    """Compare: no key of this name (``prefix``: none under it)."""

    key: str
    prefix: bool = False

    def request(self) -> dict:
        raw = self.key.encode()
        compare: dict[str, object] = {"key": _b64(raw), "target": "VERSION", "result": "EQUAL", "version": 0}
        if self.prefix:
            compare["range_end"] = _b64(_prefix_end(raw))
        return compare


@dataclass(frozen=True)
class Present:
    """Compare: the key exists."""

    key: str

    def request(self) -> dict:
        return {"key": _b64(self.key.encode()), "target": "VERSION", "result": "GREATER", "version": 0}


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0  # 0: no lease (the key stays until deleted)

    def request(self) -> dict:
        put: dict[str, object] = {"key": _b64(self.key.encode()), "value": _b64(self.value)}
        if self.lease:
            put["lease"] = self.lease
        return {"request_put": put}


@dataclass(frozen=True)
class Delete:
    key: str

    def request(self) -> dict:
        return {"request_delete_range": {"key": _b64(self.key.encode())}}


Compare = Absent | Present
Operation = Put | Delete


class _V3Error(StoreError):
    """An error answer of etcd's gateway: the gRPC status code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


_GRPC_UNAVAILABLE = 14
_GRPC_DEADLINE_EXCEEDED = 4
_GRPC_UNAUTHENTICATED = 16
_GRPC_NOT_FOUND = 5


class EtcdV3Store:
    """etcd's v3 API through its JSON gateway (``/v3/...``, served on the client port by etcd >= 3.4), over
    plain HTTP/1.1 with h11 as for v2: the same keys, leases and transactions as gRPC clients see, without
    a gRPC stack in the agent (a third of its memory and of its start-up time)."""

    api = "v3"

    def __init__(self, endpoints: list[Endpoint], tls: TlsFiles | None = None,
                 auth: Credentials | None = None) -> None:
        self._rotation = _Rotation(endpoints)
        self._auth = auth or Credentials()
        tls = tls or TlsFiles()
        self._ssl = _ssl_context(endpoints, tls)
        self._token: str | None = None  # etcd's simple tokens belong to one member: dropped on failover

    async def _exchange(self, ep: Endpoint, path: str, body: dict) -> _Exchange:
        """A request sent, its response head read; raises _V3Error for an error answer."""
        exchange = await _Exchange.open(ep, self._ssl)
        try:
            headers = [("Content-Type", "application/json")]
            if self._token is not None:
                headers.append(("Authorization", self._token))
            exchange.send(ep, "POST", path, headers, json.dumps(body).encode())
            response = await exchange.response(CALL_TIMEOUT)
            if response.status_code != 200:
                raw = await exchange.body(CALL_TIMEOUT)
                try:
                    error = json.loads(raw)
                except ValueError:
                    error = {}
                if not isinstance(error, dict) or "code" not in error:
                    raise StoreUnavailable(f"etcd at {ep} does not serve the v3 JSON gateway at {path} (HTTP "
                                           f"{response.status_code}); it needs etcd >= 3.4 with its gRPC gateway on")
                raise _V3Error(response.status_code, int(error["code"]), str(error.get("message") or error))
            return exchange
        except BaseException:
            exchange.close()
            raise

    async def _post_once(self, ep: Endpoint, path: str, body: dict) -> dict:
        exchange = await self._exchange(ep, path, body)
        try:
            answer = json.loads(await exchange.body(CALL_TIMEOUT) or b"{}")
        finally:
            exchange.close()
        return answer if isinstance(answer, dict) else {}

    async def _authenticate(self, ep: Endpoint) -> None:
        self._token = None
        reply = await self._post_once(ep, "/v3/auth/authenticate",
                                      {"name": self._auth.username, "password": self._auth.password})
        self._token = str(reply.get("token", ""))

    async def _call(self, path: str, body: dict, tolerate: int | None = None) -> dict:
        """POST to the gateway, moving on to the next member when one does not answer. An error answer
        with the gRPC code ``tolerate`` returns an empty answer; any other refusal raises StoreRefused."""
        last: BaseException | None = None
        for _ in range(len(self._rotation.endpoints)):
            ep = self._rotation.current
            try:
                return await self._call_member(ep, path, body)
            except (*_CONNECTION_ERRORS, StoreUnavailable) as exc:
                last = exc
            except _V3Error as exc:
                if exc.code == tolerate:
                    return {}
                if exc.code not in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE_EXCEEDED):
                    raise StoreRefused(f"etcd at {ep} refused the request: {exc}") from exc
                last = exc
            self._token = None
            self._rotation.advance(last)
        raise StoreUnavailable(f"no etcd endpoint answered ({', '.join(map(str, self._rotation.endpoints))}):"
                               f" {last}")

    async def _call_member(self, ep: Endpoint, path: str, body: dict) -> dict:
        if self._auth and self._token is None:
            await self._authenticate(ep)
        try:
            return await asyncio.wait_for(self._post_once(ep, path, body), CALL_TIMEOUT + 1)
        except _V3Error as exc:
            if not (self._auth and exc.code == _GRPC_UNAUTHENTICATED):
                raise
        await self._authenticate(ep)  # the token expired: once more with a new one
        return await asyncio.wait_for(self._post_once(ep, path, body), CALL_TIMEOUT + 1)

    @staticmethod
    def _entry(kv: dict) -> Entry:
        # Zero values are left out of the gateway's JSON: no "value" is b"", no "lease" is no TTL.
        return Entry(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")),
                     int(kv.get("mod_revision", 0)), int(kv.get("lease", 0)) != 0)

    async def _get_kv(self, key: str) -> dict | None:
        kvs = (await self._call("/v3/kv/range", {"key": _b64(key.encode())})).get("kvs") or []
        return kvs[0] if kvs else None

    async def get(self, key: str) -> Entry | None:
        kv = await self._get_kv(key)
        return None if kv is None else self._entry(kv)

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        raw = prefix.encode()
        reply = await self._call("/v3/kv/range", {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))})
        return [self._entry(kv) for kv in reply.get("kvs") or []], int(reply["header"]["revision"])

    async def _grant(self, ttl: int | None) -> int:
        if not ttl:
            return 0
        return int((await self._call("/v3/lease/grant", {"TTL": ttl}))["ID"])

    async def _revoke(self, lease_id: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": lease_id}, tolerate=_GRPC_NOT_FOUND)  # gone: expired

    @staticmethod
    def _put_op(key: str, value: bytes, lease_id: int) -> dict:
        put: dict[str, object] = {"key": _b64(key.encode()), "value": _b64(value)}
        if lease_id:
            put["lease"] = lease_id
        return {"request_put": put}

    async def _transaction(self, compare: dict, success: dict) -> bool:
        reply = await self._call("/v3/kv/txn", {"compare": [compare], "success": [success]})
        return bool(reply.get("succeeded"))

    async def create(self, key: str, value: bytes, ttl: int | None) -> bool:
        lease_id = await self._grant(ttl)
        ok = await self._transaction({"key": _b64(key.encode()), "target": "VERSION", "result": "EQUAL", "version": 0},
                                     self._put_op(key, value, lease_id))
        if not ok and lease_id:
            await self._revoke(lease_id)
        return ok

    async def put(self, key: str, value: bytes, ttl: int | None, prev_revision: int | None = None) -> bool:
        # Like flanneld on v3, every renewal is a fresh etcd lease; the old one is revoked after the key
        # moved, so it cannot take the key with it.
        previous = await self._get_kv(key)
        if prev_revision is not None and (previous is None or int(previous.get("mod_revision", 0)) != prev_revision):
            return False
        old_lease = int((previous or {}).get("lease", 0))
        lease_id = await self._grant(ttl)
        if prev_revision is None:
            await self._call("/v3/kv/put", self._put_op(key, value, lease_id)["request_put"])
        # The read above is only a shortcut: the transaction is what makes the write conditional.
        elif not await self._transaction({"key": _b64(key.encode()), "target": "MOD", "result": "EQUAL",
                                          "mod_revision": prev_revision}, self._put_op(key, value, lease_id)):
            if lease_id:
                await self._revoke(lease_id)
            return False
        if old_lease and old_lease != lease_id:
            await self._revoke(old_lease)
        return True

    async def delete(self, key: str) -> None:
        await self._call("/v3/kv/deleterange", {"key": _b64(key.encode())})

    async def transaction(self, compare: list[Compare], success: list[Operation]) -> bool:
        """Every operation if every compare holds, else none; whether they were done."""
        reply = await self._call("/v3/kv/txn", {"compare": [c.request() for c in compare],
                                                "success": [o.request() for o in success]})
        return bool(reply.get("succeeded"))

    async def grant(self, ttl: int) -> int:
        """A new lease of ttl seconds; its id."""
        return await self._grant(ttl)

    async def keep_alive(self, lease_id: int) -> int:
        """Renew the lease; the seconds it has left (0: it expired, and its keys are gone)."""
        reply = await self._call("/v3/lease/keepalive", {"ID": lease_id})
        return int((reply.get("result") or {}).get("TTL", 0))

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        raw = prefix.encode()
        request = {"create_request": {"key": _b64(raw), "range_end": _b64(_prefix_end(raw)),
                                      "start_revision": start_revision}}
        ep = self._rotation.current
        try:
            if self._auth and self._token is None:
                await self._authenticate(ep)
            exchange = await self._exchange(ep, "/v3/watch", request)
        except (*_CONNECTION_ERRORS, StoreUnavailable) as exc:
            self._token = None
            self._rotation.advance(exc)
            raise StoreUnavailable(f"cannot watch {prefix}: {exc}") from exc
        except _V3Error as exc:
            self._token = None  # a refused token is asked for again on the next try
            raise StoreRefused(f"etcd at {ep} refused the watch on {prefix}: {exc}") from exc
        decoder = json.JSONDecoder()
        pending = ""
        try:
            while True:
                try:
                    piece = await exchange.chunk(None)  # a quiet watch may wait for hours: the caller cancels
                except _CONNECTION_ERRORS as exc:
                    self._rotation.advance(exc)
                    raise StoreUnavailable(f"watch on {prefix} broke: {exc}") from exc
                if piece is None:
                    self._rotation.advance(ConnectionResetError("watch stream ended"))
                    raise StoreUnavailable(f"watch on {prefix} ended by etcd at {ep}")
                pending += piece.decode()
                # The gateway writes one JSON object per message, newline-delimited, in chunks of any size.
                while (pending := pending.lstrip()):
                    try:
                        message, end = decoder.raw_decode(pending)
                    except ValueError:
                        break  # the rest of the object is still to come
                    pending = pending[end:]
                    for event in self._watch_events(message, prefix):
                        yield event
        finally:
            exchange.close()

    def _watch_events(self, message: dict, prefix: str) -> list[Event]:
        if "error" in message:
            raise StoreUnavailable(f"watch on {prefix} failed: {message['error']}")
        result = message.get("result") or {}
        if int(result.get("compact_revision", 0)):
            raise WatchResync(f"required revision has been compacted (compacted at {result['compact_revision']})")
        if result.get("canceled"):
            raise StoreUnavailable(f"etcd cancelled the watch on {prefix}: {result.get('cancel_reason', '')}")
        events = []
        for ev in result.get("events") or []:
            kv = ev["kv"]
            kind: Literal["put", "delete"] = "delete" if ev.get("type") == "DELETE" else "put"
            events.append(Event(kind, base64.b64decode(kv["key"]).decode(),
                                base64.b64decode(kv.get("value", "")) if kind == "put" else None,
                                int(kv.get("mod_revision", 0)), int(kv.get("lease", 0)) != 0))
        return events

    async def close(self) -> None:
        return None  # no connection outlives its request


# ---------------------------------------------------------------------------------------------- v2

class _V2Error(StoreRefused):
    """An etcd v2 error answer; the store handles the codes it expects, callers see the rest as refusals."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(f"etcd v2 error {body.get('errorCode')}: {body.get('message')} ({body.get('cause')})")
        self.status = status
        self.code = body.get("errorCode")
        self.index = int(body.get("index", 0))


_V2_KEY_NOT_FOUND = 100
_V2_TEST_FAILED = 101
_V2_KEY_EXISTS = 105
_V2_EVENT_INDEX_CLEARED = 401


@dataclass
class _V2Response:
    status: int
    index: int
    body: dict


class EtcdV2Store:
    """etcd's v2 HTTP API over asyncio streams (h11 frames the HTTP), so a long-poll watch is cancellable."""

    api = "v2"

    def __init__(self, endpoints: list[Endpoint], tls: TlsFiles | None = None,
                 auth: Credentials | None = None) -> None:
        self._rotation = _Rotation(endpoints)
        self._authorization: str | None = None
        if auth:
            token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
            self._authorization = f"Basic {token}"
        self._ssl = _ssl_context(endpoints, tls or TlsFiles())

    async def _request_once(self, ep: Endpoint, method: str, path: str, query: dict[str, str],
                            form: dict[str, str] | None, timeout: float | None) -> _V2Response:
        target = "/v2/keys" + urllib.parse.quote(path) + ("?" + urllib.parse.urlencode(query) if query else "")
        body = urllib.parse.urlencode(form).encode() if form is not None else b""
        exchange = await _Exchange.open(ep, self._ssl)
        try:
            headers = []
            if form is not None:
                headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            if self._authorization is not None:
                headers.append(("Authorization", self._authorization))
            exchange.send(ep, method, target, headers, body)
            response = await exchange.response(timeout)
            index = next((int(value) for name, value in response.headers if name == b"x-etcd-index"), 0)
            raw = await exchange.body(timeout)
            try:
                parsed = json.loads(raw or b"{}")
            except ValueError:
                parsed = {}  # e.g. "404 page not found" from an etcd without the v2 API
            return _V2Response(response.status_code, index, parsed if isinstance(parsed, dict) else {})
        finally:
            exchange.close()

    async def _request(self, method: str, path: str, query: dict[str, str] | None = None,
                       form: dict[str, str] | None = None, timeout: float | None = CALL_TIMEOUT) -> _V2Response:
        last: BaseException | None = None
        for _ in range(len(self._rotation.endpoints)):
            try:
                resp = await self._request_once(self._rotation.current, method, path, query or {}, form, timeout)
            except _CONNECTION_ERRORS as exc:
                last = exc
                self._rotation.advance(exc)
                continue
            if resp.status in (401, 403):
                raise StoreRefused(f"etcd at {self._rotation.current} refused the request (HTTP {resp.status}"
                                   f"{': ' + str(resp.body.get('message')) if resp.body.get('message') else ''});"
                                   " check --etcd-username/--etcd-password")
            if resp.status >= 400 and "errorCode" in resp.body:
                raise _V2Error(resp.status, resp.body)
            if resp.status == 404:
                raise StoreUnavailable(f"etcd at {self._rotation.current} does not serve the v2 API "
                                       "(start it with --enable-v2)")
            if resp.status >= 500:
                last = RuntimeError(f"HTTP {resp.status}")
                self._rotation.advance(last)
                continue
            return resp
        raise StoreUnavailable(f"no etcd endpoint answered ({', '.join(map(str, self._rotation.endpoints))}):"
                               f" {last}")

    @staticmethod
    def _entry(node: dict) -> Entry:
        return Entry(node["key"], node.get("value", "").encode(), int(node["modifiedIndex"]), "ttl" in node)

    async def get(self, key: str) -> Entry | None:
        try:
            resp = await self._request("GET", key, {"quorum": "true"})
        except _V2Error as exc:
            if exc.code == _V2_KEY_NOT_FOUND:
                return None
            raise
        return self._entry(resp.body["node"])

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        try:
            resp = await self._request("GET", prefix.rstrip("/"), {"recursive": "true", "quorum": "true"})
        except _V2Error as exc:
            if exc.code == _V2_KEY_NOT_FOUND:
                return [], exc.index
            raise
        entries: list[Entry] = []
        stack = [resp.body["node"]]
        while stack:
            node = stack.pop()
            if node.get("dir"):
                stack.extend(node.get("nodes", []))
            else:
                entries.append(self._entry(node))
        return entries, resp.index

    async def create(self, key: str, value: bytes, ttl: int | None) -> bool:
        form = {"value": value.decode()}
        if ttl:
            form["ttl"] = str(ttl)
        try:
            await self._request("PUT", key, {"prevExist": "false"}, form)
        except _V2Error as exc:
            if exc.code == _V2_KEY_EXISTS:
                return False
            raise
        return True

    async def put(self, key: str, value: bytes, ttl: int | None, prev_revision: int | None = None) -> bool:
        form = {"value": value.decode()}
        if ttl:
            form["ttl"] = str(ttl)
        query = {"prevIndex": str(prev_revision)} if prev_revision is not None else None
        try:
            await self._request("PUT", key, query, form)
        except _V2Error as exc:
            if prev_revision is not None and exc.code in (_V2_KEY_NOT_FOUND, _V2_TEST_FAILED):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        try:
            await self._request("DELETE", key)
        except _V2Error as exc:
            if exc.code != _V2_KEY_NOT_FOUND:
                raise

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        index = start_revision
        while True:
            try:
                # A long poll answers with one event; no timeout, the caller cancels.
                resp = await self._request("GET", prefix.rstrip("/"),
                                           {"wait": "true", "recursive": "true", "waitIndex": str(index)},
                                           timeout=None)
            except _V2Error as exc:
                if exc.code == _V2_EVENT_INDEX_CLEARED:
                    raise WatchResync(str(exc)) from exc
                raise
            node = resp.body.get("node", {})
            if not node or node.get("dir"):
                # A change to a directory is no lease event, but the next poll must start past it: waiting
                # again at the same index would return this very answer forever.
                index = max(index, int(node.get("modifiedIndex", index - 1)) + 1)
                continue
            action = resp.body.get("action", "")
            kind: Literal["put", "delete"] = (
                "delete" if action in ("delete", "expire", "compareAndDelete") else "put")
            revision = int(node["modifiedIndex"])
            yield Event(kind, node["key"], node.get("value", "").encode() if kind == "put" else None,
                        revision, "ttl" in node)
            index = revision + 1

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------- choice

API_CHOICES = ("auto", "v3", "v2")


async def find_config_store(endpoints: list[Endpoint], tls: TlsFiles | None, api: str, config_key: str,
                            auth: Credentials | None = None) -> tuple[KeyValueStore, Entry | None]:
    """The store to use and the config found in it (None: not there yet; the caller waits and asks again).

    With api="auto" the v3 keyspace is asked first (flanneld >= 0.18), then v2 (the seed's
    ``etcdctl mk``); without a config in either, v3 is returned.
    """
    if api not in API_CHOICES:
        raise ValueError(f"etcd API {api!r} is not one of {', '.join(API_CHOICES)}")
    if api in ("v3", "auto"):
        v3 = EtcdV3Store(endpoints, tls, auth)
        try:
            entry = await v3.get(config_key)
        except BaseException:
            await v3.close()
            raise
        if entry is not None or api == "v3":
            return v3, entry
        await v3.close()
    v2 = EtcdV2Store(endpoints, tls, auth)
    try:
        entry = await v2.get(config_key)
    except StoreUnavailable:
        if api == "v2":
            raise
        entry = None  # etcd without --enable-v2 answers 404 pages, not v2 errors
    if entry is not None or api == "v2":
        return v2, entry
    return EtcdV3Store(endpoints, tls, auth), None
