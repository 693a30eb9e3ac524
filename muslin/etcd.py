"""etcd as a small key-value store, in both of the keyspaces flannel has used; shared by the fabric's agent
and the engine's cluster store (``--cluster-store``), which also uses its transactions and leases: v3's
own, or on an etcd that serves only v2 the same emulated with v2's single-key conditions and TTLs
(``EtcdV2Store.transaction``, ``grant``, ``keep_alive``; ``detect_api`` tells which API answers).

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


class ApiNotServed(StoreUnavailable):
    """etcd answered, but not in this API (v3 without its JSON gateway, v2 without --enable-v2)."""


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


class ClusterKeyValueStore(KeyValueStore, Protocol):
    """What the engine's cluster store needs on top: transactions and leases (v3's own; emulated on v2)."""

    async def transaction(self, compare: list[Compare], success: list[Operation]) -> bool: ...

    async def grant(self, ttl: int) -> int: ...

    async def keep_alive(self, lease_id: int) -> int: ...


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
                    raise ApiNotServed(f"etcd at {ep} does not serve the v3 JSON gateway at {path} (HTTP "
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
        not_served: ApiNotServed | None = None  # a member answered, without the gateway
        for _ in range(len(self._rotation.endpoints)):
            ep = self._rotation.current
            try:
                return await self._call_member(ep, path, body)
            except (*_CONNECTION_ERRORS, StoreUnavailable) as exc:
                last = exc
                if isinstance(exc, ApiNotServed):
                    not_served = exc
            except _V3Error as exc:
                if exc.code == tolerate:
                    return {}
                if exc.code not in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE_EXCEEDED):
                    raise StoreRefused(f"etcd at {ep} refused the request: {exc}") from exc
                last = exc
            self._token = None
            self._rotation.advance(last)
        if not_served is not None:  # and the members that did not answer are configured alike
            raise not_served
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
_V2_UNAUTHORIZED = 110
_V2_EVENT_INDEX_CLEARED = 401


# The v2 emulation of v3's transactions and leases (EtcdV2Store.transaction, grant, keep_alive).
V2_FENCE_ROOT = "/muslin-fence"  # a remover's fence on a key it is about to delete (see _fenced_deletes)
V2_FENCE_TTL = 30  # seconds: a remover that died leaves its fences this long at most
V2_PROVISIONAL_TTL = 30  # seconds: what a writer that died half-way through a transaction leaves, this long
V2_REFRESH_BATCH = 16  # a lease's keys refreshed this many at a time


@dataclass
class _V2Lease:
    """v2 has no leases: here a lease is the keys written with it, each a TTL key of ``ttl`` seconds, all
    refreshed together by keep_alive."""

    ttl: int
    keys: set[str] = field(default_factory=set)


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
        self._leases: dict[int, _V2Lease] = {}
        self._last_lease = 0

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
            if resp.status in (401, 403) and resp.body.get("errorCode") in (None, _V2_UNAUTHORIZED):
                raise StoreRefused(f"etcd at {self._rotation.current} refused the request (HTTP {resp.status}"
                                   f"{': ' + str(resp.body.get('message')) if resp.body.get('message') else ''});"
                                   " check --etcd-username/--etcd-password")
            if resp.status >= 400 and "errorCode" in resp.body:
                raise _V2Error(resp.status, resp.body)
            if resp.status == 404:
                raise ApiNotServed(f"etcd at {self._rotation.current} does not serve the v2 API "
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
        return await self._claim(key, value, ttl) is not None

    async def _write(self, key: str, value: bytes, ttl: int | None, query: dict[str, str] | None = None) -> int:
        """PUT (without a ttl the key is kept for good, also one that had a TTL); the index it got."""
        form = {"value": value.decode()}
        if ttl:
            form["ttl"] = str(ttl)
        resp = await self._request("PUT", key, query, form)
        return int(resp.body["node"]["modifiedIndex"])

    async def _claim(self, key: str, value: bytes, ttl: int | None) -> int | None:
        """Create key atomically (prevExist=false); its index, None if it exists."""
        try:
            return await self._write(key, value, ttl, {"prevExist": "false"})
        except _V2Error as exc:
            if exc.code == _V2_KEY_EXISTS:
                return None
            raise

    async def _delete_own(self, key: str, index: int) -> None:
        """Delete key only while it is what this client wrote at index (prevIndex)."""
        try:
            await self._request("DELETE", key, {"prevIndex": str(index)})
        except _V2Error as exc:
            if exc.code not in (_V2_KEY_NOT_FOUND, _V2_TEST_FAILED):
                raise

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
        for lease in self._leases.values():
            lease.keys.discard(key)  # deleted on purpose: keep_alive must not take it for an expired one
        try:
            await self._request("DELETE", key)
        except _V2Error as exc:
            if exc.code != _V2_KEY_NOT_FOUND:
                raise

    # -- v3's transactions, for the shapes the engine's cluster store uses ------------------------------
    async def transaction(self, compare: list[Compare], success: list[Operation]) -> bool:
        """v3's all-or-nothing transaction, built from v2's single-key conditions, for three shapes:

        - no compare: the operations in order;
        - writes, guarded by Absent(k) for keys k they write (each is created with prevExist=false, a lost
          race undoes what was written) and Present(k) (checked after the writes, see _fenced_deletes);
        - deletes, guarded by any compare, under fences (_fenced_deletes).

        Between the first write and the last, other clients may see part of it; a writer that dies
        half-way leaves TTL keys that expire (V2_PROVISIONAL_TTL, or the lease's). A v2 prefix is a
        directory: Absent(prefix=True) takes keys ending in "/"."""
        if not compare:
            for op in success:
                if isinstance(op, Put):
                    await self._write(op.key, op.value, self._lease_ttl(op.lease))
                    self._track(op)
                else:
                    await self.delete(op.key)
            return True
        if all(isinstance(op, Delete) for op in success):
            return await self._fenced_deletes(compare, [op.key for op in success])
        puts = [op for op in success if isinstance(op, Put)]
        if len(puts) != len(success):
            raise ValueError("a v2 transaction either writes or deletes")
        return await self._guarded_puts(compare, puts)

    async def _guarded_puts(self, compare: list[Compare], puts: list[Put]) -> bool:
        claims = {c.key for c in compare if isinstance(c, Absent) and not c.prefix}
        if any(isinstance(c, Absent) and (c.prefix or c.key not in {p.key for p in puts}) for c in compare):
            raise ValueError("etcd v2 checks that a key is absent only by creating it")
        # Claims first, so that a lost race has written nothing else; everything provisional (a TTL) until
        # every condition held, then kept for good (or under its lease, refreshed from then on).
        ordered = [p for p in puts if p.key in claims] + [p for p in puts if p.key not in claims]
        written: list[tuple[Put, int]] = []
        for put in ordered:
            ttl = self._lease_ttl(put.lease) or V2_PROVISIONAL_TTL
            if put.key in claims:
                index = await self._claim(put.key, put.value, ttl)
                if index is None:
                    await self._undo(written)
                    return False
            else:
                index = await self._write(put.key, put.value, ttl)
            written.append((put, index))
        for c in compare:
            if isinstance(c, Present) and not await self._present_unfenced(c.key):
                await self._undo(written)
                return False
        for put, index in written:
            if put.lease:
                self._track(put)
            else:
                await self._write(put.key, put.value, None, {"prevIndex": str(index)})
        return True

    async def _undo(self, written: list[tuple[Put, int]]) -> None:
        for put, index in reversed(written):
            await self._delete_own(put.key, index)

    async def _present_unfenced(self, key: str) -> bool:
        """The key is there, and no remover is deleting it. The fence is read first: see _fenced_deletes."""
        return await self.get(V2_FENCE_ROOT + key) is None and await self.get(key) is not None

    async def _fenced_deletes(self, compare: list[Compare], keys: list[str]) -> bool:
        """Delete keys if every compare holds, with writers guarded by Present(key) kept out.

        The remover fences each key, then checks, then deletes; a writer writes, then reads the fence, then
        the key. Reads are linearizable (quorum), so either the writer read no fence before the fence was
        made, and then its write came before the remover's check, which sees it (and gives up); or the
        writer sees the fence or the key gone (and undoes its write). Both giving up is possible, one
        succeeding where the other should not is not. A second remover finds the fence and gives up."""
        fences: list[tuple[str, int]] = []
        try:
            for key in keys:
                index = await self._claim(V2_FENCE_ROOT + key, b"", V2_FENCE_TTL)
                if index is None:
                    return False
                fences.append((V2_FENCE_ROOT + key, index))
            for c in compare:
                if not await self._holds(c):
                    return False
            for key in keys:
                await self.delete(key)
            return True
        finally:
            for fence, index in fences:
                try:
                    await self._delete_own(fence, index)
                except StoreError as exc:  # it expires by itself
                    log.debug("fence %s left to expire: %s", fence, exc)

    async def _holds(self, c: Compare) -> bool:
        if isinstance(c, Present):
            return await self.get(c.key) is not None
        if c.prefix:
            return not (await self.list(c.key))[0]
        return await self.get(c.key) is None

    # -- v3's leases, as TTL keys refreshed together -----------------------------------------------------
    async def probe(self) -> None:
        """Raises unless etcd serves the v2 API (ApiNotServed) and answers (StoreUnavailable)."""
        await self._request("GET", "/")

    async def grant(self, ttl: int) -> int:
        """A new lease of ttl seconds (kept by this client: etcd only sees its keys' TTLs)."""
        await self.probe()
        self._last_lease += 1
        self._leases[self._last_lease] = _V2Lease(ttl)
        return self._last_lease

    def _lease_ttl(self, lease_id: int) -> int | None:
        if not lease_id:
            return None
        lease = self._leases.get(lease_id)
        if lease is None:
            raise StoreRefused(f"etcd v2: lease {lease_id} not found (it expired)")
        return lease.ttl

    def _track(self, put: Put) -> None:
        if put.lease and (lease := self._leases.get(put.lease)) is not None:
            lease.keys.add(put.key)

    async def keep_alive(self, lease_id: int) -> int:
        """Refresh every key of the lease (refresh=true: no watcher is woken); the seconds it has left, 0 if
        one of its keys expired meanwhile (etcd away longer than the TTL): then, as a v3 lease that
        expired, it is over, and its holder starts again with a new one."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0
        keys = sorted(lease.keys)
        for start in range(0, len(keys), V2_REFRESH_BATCH):
            batch = keys[start:start + V2_REFRESH_BATCH]
            alive = await asyncio.gather(*(self._refresh(key, lease.ttl) for key in batch))
            expired = [key for key, ok in zip(batch, alive) if not ok and key in lease.keys]
            if expired:
                log.info("etcd v2: %d key(s) of lease %d expired (%s ...)", len(expired), lease_id, expired[0])
                del self._leases[lease_id]
                return 0
        if not keys:
            await self.probe()
        return lease.ttl

    async def _refresh(self, key: str, ttl: int) -> bool:
        try:
            await self._request("PUT", key, {"refresh": "true", "prevExist": "true"}, {"ttl": str(ttl)})
        except _V2Error as exc:
            if exc.code == _V2_KEY_NOT_FOUND:
                return False
            raise
        return True

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

async def detect_api(v3: EtcdV3Store, v2: EtcdV2Store) -> EtcdV3Store | EtcdV2Store:
    """The API etcd serves: the v3 JSON gateway if it answers, else v2 where only that does (etcd 2, or 3.x
    with --enable-v2 and its gateway off). StoreUnavailable if no member answers; StoreRefused if etcd
    serves neither."""
    try:
        await v3.get("/")
        return v3
    except ApiNotServed as exc:
        without_v3 = exc
    try:
        await v2.probe()
    except ApiNotServed as exc:
        raise StoreRefused(f"etcd serves neither the v3 JSON gateway nor the v2 API ({without_v3}; {exc})") from exc
    return v2


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
