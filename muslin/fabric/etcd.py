"""etcd as a small key-value store, in both of the keyspaces flannel has used.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import aetcd
import aetcd.exceptions
import grpc
import h11
from aetcd import rpc

log = logging.getLogger(__name__)

T = TypeVar("T")
CALL_TIMEOUT = 5.0


class StoreError(RuntimeError):
    """etcd could not serve a request; the message says why."""


class StoreUnavailable(StoreError):
    """No endpoint answered."""


class StoreRefused(StoreError):
    """etcd answered but refused the request (bad credentials, no permission, invalid request)."""


class WatchResync(RuntimeError):
    """The watch cannot resume from the requested revision (history compacted): list again."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    revision: int  # revision (v3) or index (v2) of the last change to this key
    expires: bool  # False for keys kept without TTL (flannel's reservations)


@dataclass(frozen=True)
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


# ---------------------------------------------------------------------------------------------- v3

_V3_CONNECTION_ERRORS = (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError,
                         grpc.RpcError, OSError, asyncio.TimeoutError)


class _TlsClient(aetcd.Client):
    """aetcd opens only plaintext channels; this one opens a TLS channel with client certificates."""

    def __init__(self, host: str, port: int, credentials: grpc.ChannelCredentials, timeout: float,
                 auth: Credentials) -> None:
        super().__init__(host=host, port=port, timeout=timeout, username=auth.username or None,
                         password=auth.password if auth else None)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        self.channel = rpc.secure_channel(f"{self._host}:{self._port}", self._credentials)
        if self._username is not None:
            # The token goes along with every call as metadata, as aetcd does on plaintext channels.
            try:
                reply = await rpc.AuthStub(self.channel).Authenticate(
                    rpc.AuthenticateRequest(name=self._username, password=self._password), timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED):
                    raise aetcd.exceptions.UnauthenticatedError(exc.details()) from exc  # a refusal, not an outage
                raise
            self.metadata = (("token", reply.token),)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                              metadata=self.metadata)
        self._connected.set()


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class EtcdV3Store:
    api = "v3"

    def __init__(self, endpoints: list[Endpoint], tls: TlsFiles | None = None,
                 auth: Credentials | None = None) -> None:
        self._rotation = _Rotation(endpoints)
        self._tls = tls or TlsFiles()
        self._auth = auth or Credentials()
        self._credentials: grpc.ChannelCredentials | None = None
        if any(e.scheme == "https" for e in endpoints) or self._tls:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(self._tls.cafile), private_key=_read(self._tls.keyfile),
                certificate_chain=_read(self._tls.certfile))
        self._client: aetcd.Client | None = None

    def _connect(self) -> aetcd.Client:
        if self._client is None:
            ep = self._rotation.current
            if ep.scheme == "https" and self._credentials is not None:
                self._client = _TlsClient(ep.host, ep.port, self._credentials, CALL_TIMEOUT, self._auth)
            else:
                self._client = aetcd.Client(host=ep.host, port=ep.port, timeout=CALL_TIMEOUT,
                                            username=self._auth.username or None,
                                            password=self._auth.password if self._auth else None)
        return self._client

    async def _drop_client(self, error: BaseException) -> None:
        client, self._client = self._client, None
        self._rotation.advance(error)
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), 2)
            except Exception:  # a dead channel may fail to close; it is discarded either way
                pass

    async def _call(self, op: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        last: BaseException | None = None
        for _ in range(len(self._rotation.endpoints)):
            client = self._connect()
            try:
                return await asyncio.wait_for(op(client), CALL_TIMEOUT + 1)
            except _V3_CONNECTION_ERRORS as exc:
                last = exc
                await self._drop_client(exc)
            except aetcd.exceptions.ClientError as exc:  # answered, but refused: another member would too
                endpoint = self._rotation.current
                await self._drop_client(exc)
                raise StoreRefused(f"etcd at {endpoint} refused the request: {str(exc) or type(exc).__name__}"
                                   ) from exc
        raise StoreUnavailable(f"no etcd endpoint answered ({', '.join(map(str, self._rotation.endpoints))}):"
                               f" {last}")

    async def get(self, key: str) -> Entry | None:
        got = await self._call(lambda c: c.get(key.encode()))
        if got is None:
            return None
        return Entry(key, got.value, got.mod_revision, got.lease != 0)

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        rng = await self._call(lambda c: c.get_prefix(prefix.encode()))
        entries = [Entry(kv.key.decode(), kv.value, kv.mod_revision, kv.lease != 0) for kv in rng]
        return entries, rng.header.revision

    async def _grant(self, client: aetcd.Client, ttl: int | None) -> int:
        if not ttl:
            return 0
        return (await client.lease(ttl)).id

    async def create(self, key: str, value: bytes, ttl: int | None) -> bool:
        async def op(c: aetcd.Client) -> bool:
            lease_id = await self._grant(c, ttl)
            ok, _ = await c.transaction(
                compare=[c.transactions.version(key.encode()) == 0],
                success=[c.transactions.put(key.encode(), value, lease=lease_id or None)], failure=[])
            if not ok and lease_id:
                await c.revoke_lease(lease_id)
            return bool(ok)
        return await self._call(op)

    async def put(self, key: str, value: bytes, ttl: int | None, prev_revision: int | None = None) -> bool:
        async def op(c: aetcd.Client) -> bool:
            # Like flanneld on v3, every renewal is a fresh etcd lease; the old one is revoked after the
            # key moved, so it cannot take the key with it.
            previous = await c.get(key.encode())
            if prev_revision is not None and (previous is None or previous.mod_revision != prev_revision):
                return False
            lease_id = await self._grant(c, ttl)
            if prev_revision is None:
                await c.put(key.encode(), value, lease=lease_id or None)
            else:
                # The read above is only a shortcut: the transaction is what makes the write conditional.
                ok, _ = await c.transaction(
                    compare=[c.transactions.mod(key.encode()) == prev_revision],
                    success=[c.transactions.put(key.encode(), value, lease=lease_id or None)], failure=[])
                if not ok:
                    if lease_id:
                        await c.revoke_lease(lease_id)
                    return False
            if previous is not None and previous.lease and previous.lease != lease_id:
                try:
                    await c.revoke_lease(previous.lease)
                except aetcd.exceptions.ClientError:
                    pass  # already expired
            return True
        return await self._call(op)

    async def delete(self, key: str) -> None:
        await self._call(lambda c: c.delete(key.encode()))

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        client = self._connect()
        try:
            watch = await asyncio.wait_for(client.watch_prefix(prefix.encode(), start_revision=start_revision),
                                           CALL_TIMEOUT)
        except _V3_CONNECTION_ERRORS as exc:
            await self._drop_client(exc)
            raise StoreUnavailable(f"cannot watch {prefix}: {exc}") from exc
        try:
            async for ev in watch:
                kind: Literal["put", "delete"] = "put" if ev.kind == "PUT" else "delete"
                yield Event(kind, ev.kv.key.decode(), ev.kv.value if kind == "put" else None,
                            ev.kv.mod_revision, ev.kv.lease != 0)
        except aetcd.exceptions.RevisionCompactedError as exc:
            raise WatchResync(str(exc)) from exc
        except _V3_CONNECTION_ERRORS as exc:
            await self._drop_client(exc)
            raise StoreUnavailable(f"watch on {prefix} broke: {exc}") from exc
        finally:
            try:
                await asyncio.wait_for(watch.cancel(), 1)
            except Exception:  # the stream may already be gone
                pass

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


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
_V2_CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, h11.ProtocolError, asyncio.IncompleteReadError)


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
        tls = tls or TlsFiles()
        self._ssl: ssl.SSLContext | None = None
        if any(e.scheme == "https" for e in endpoints):
            self._ssl = ssl.create_default_context(cafile=tls.cafile)
            if tls.certfile:
                self._ssl.load_cert_chain(tls.certfile, tls.keyfile)

    async def _request_once(self, ep: Endpoint, method: str, path: str, query: dict[str, str],
                            form: dict[str, str] | None, timeout: float | None) -> _V2Response:
        target = "/v2/keys" + urllib.parse.quote(path) + ("?" + urllib.parse.urlencode(query) if query else "")
        body = urllib.parse.urlencode(form).encode() if form is not None else b""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(ep.host, ep.port, ssl=self._ssl if ep.scheme == "https" else None),
            CALL_TIMEOUT)
        try:
            conn = h11.Connection(h11.CLIENT)
            headers = [("Host", f"{ep.host}:{ep.port}"), ("Connection", "close"),
                       ("Content-Length", str(len(body)))]
            if form is not None:
                headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            if self._authorization is not None:
                headers.append(("Authorization", self._authorization))
            writer.write(conn.send(h11.Request(method=method, target=target, headers=headers))
                         + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            status, index, chunks = 0, 0, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        raise asyncio.IncompleteReadError(b"", None)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    for name, value in event.headers:
                        if name == b"x-etcd-index":
                            index = int(value)
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            try:
                parsed = json.loads(b"".join(chunks) or b"{}")
            except ValueError:
                parsed = {}  # e.g. "404 page not found" from an etcd without the v2 API
            return _V2Response(status, index, parsed if isinstance(parsed, dict) else {})
        finally:
            writer.close()

    async def _request(self, method: str, path: str, query: dict[str, str] | None = None,
                       form: dict[str, str] | None = None, timeout: float | None = CALL_TIMEOUT) -> _V2Response:
        last: BaseException | None = None
        for _ in range(len(self._rotation.endpoints)):
            try:
                resp = await self._request_once(self._rotation.current, method, path, query or {}, form, timeout)
            except _V2_CONNECTION_ERRORS as exc:
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
