"""The apiserver's storage: the only code in kubeling that talks to etcd.

A narrow, kine-like interface over etcd v3: bytes in, bytes out, nothing
Kubernetes-specific. Every write is a single etcd transaction, so a write
either happens completely or not at all.

    create(key, value)                       -> revision       | KeyExistsError
    get(key)                                 -> KeyValue       | KeyNotFoundError
    update(key, value, expected_mod_revision)-> revision       | KeyNotFoundError, ConflictError
    delete(key, expected_mod_revision=None)  -> (KeyValue, rev)| KeyNotFoundError, ConflictError
    list(prefix, revision, start_key, limit) -> ListResult     | CompactedError, FutureRevisionError
    watch(prefix, start_revision)            -> WatchStream    | CompactedError (while iterating)
    current_revision(), compact(revision)

Any method may raise ``StorageUnavailableError`` (etcd unreachable or timed
out; the message names the endpoint). Reads are retried on the next member
when one is unreachable. Writes are sent only to a member whose connection is
up, and are never retried once sent: if the connection breaks while a write
is in flight, its outcome is unknown and ``StorageUnavailableError`` says so.

aetcd is used for its channel/stub setup only; requests are built with its
``rpc`` module because its high-level calls cannot range at a revision or
with a limit, and its watch multiplexes everything on one stream whose
compaction error only appears once iterating.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import weakref
from typing import AsyncIterator, Literal, Optional, Sequence

import aetcd
import grpc
from aetcd import rpc

__all__ = [
    "CompactedError",
    "ConflictError",
    "FutureRevisionError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "ListResult",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "WatchEvent",
    "WatchStream",
]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0
_COMPACT_PROBE_TIMEOUT = 1.0
_COMPACT_PROBE_KEY = b"\x00kubeling/compaction-probe"

# Ranges over many objects can be large; etcd itself allows any size on its
# send side. Keepalive pings let a watch notice a vanished member; etcd
# refuses pings more often than every 5 s and pings on idle connections.
# A short reconnect backoff makes a restarted member usable again quickly.
_CHANNEL_OPTIONS = {
    "grpc.max_receive_message_length": -1,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1_000,
}

# Status codes that mean "could not talk to this member" rather than "etcd
# refused the request".
_TRANSPORT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)


# -- errors ---------------------------------------------------------------


class StorageError(Exception):
    """Base class of every error this module raises."""


class KeyExistsError(StorageError):
    """``create`` found the key already present. Nothing was written."""

    def __init__(self, key: bytes):
        self.key = key
        super().__init__(f"key {key!r} already exists")


class KeyNotFoundError(StorageError):
    """The key does not exist (at the revision read). Nothing was written."""

    def __init__(self, key: bytes):
        self.key = key
        super().__init__(f"key {key!r} not found")


class ConflictError(StorageError):
    """The key's mod revision differs from the expected one. Nothing was written.

    ``current_mod_revision`` is the key's mod revision when the write was refused.
    """

    def __init__(
        self, current_mod_revision: int, *, key: bytes = b"", expected_mod_revision: int = 0
    ):
        self.current_mod_revision = current_mod_revision
        self.expected_mod_revision = expected_mod_revision
        self.key = key
        super().__init__(
            f"key {key!r} is at mod revision {current_mod_revision},"
            f" expected {expected_mod_revision}"
        )


class CompactedError(StorageError):
    """The requested revision is older than etcd's compaction revision.

    ``compact_revision`` is the oldest revision still available (0 if it
    could not be determined). The caller must start over from a fresh list.
    """

    def __init__(self, compact_revision: int, *, requested_revision: int = 0):
        self.compact_revision = compact_revision
        self.requested_revision = requested_revision
        where = f"revision {requested_revision}" if requested_revision else "the requested revision"
        oldest = compact_revision or "unknown"
        super().__init__(f"{where} has been compacted (oldest available revision: {oldest})")


class FutureRevisionError(StorageError):
    """The requested revision is newer than etcd's current revision."""

    def __init__(self, requested_revision: int):
        self.requested_revision = requested_revision
        super().__init__(f"revision {requested_revision} is a future revision")


class StorageUnavailableError(StorageError):
    """etcd could not be reached, broke the connection or timed out.

    ``endpoint`` names the member involved (or all of them). For a write the
    outcome may be unknown; the message says so.
    """

    def __init__(self, endpoint: str, message: str):
        self.endpoint = endpoint
        super().__init__(f"etcd {endpoint}: {message}")


# -- values -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int


@dataclasses.dataclass(frozen=True, slots=True)
class ListResult:
    """A page of a list. ``revision`` is the revision it was read at; ``more``
    says whether keys remain after the last item (ask again with
    ``start_key=items[-1].key + b"\\0"`` and the same ``revision``)."""

    items: list[KeyValue]
    revision: int
    more: bool


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change of one key.

    PUT: ``value`` is the new value; ``prev_value`` the value before, or None
    when the key was created (``create_revision == mod_revision``) or, rarely,
    when the previous value was already compacted.
    DELETE: ``value`` is empty and ``prev_value`` is the last value (always
    set; see ``Storage.watch``). ``mod_revision`` is the revision of the
    change, for DELETE the deletion revision. ``prev_mod_revision`` is the
    mod revision of ``prev_value`` (0 without one); ``create_revision`` the
    key's create revision (0 for DELETE).
    """

    type: Literal["PUT", "DELETE"]
    key: bytes
    value: bytes
    prev_value: Optional[bytes]
    mod_revision: int
    create_revision: int = 0
    prev_mod_revision: int = 0


def prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` that covers exactly the keys starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # empty or all-0xff prefix: every key from ``prefix`` on


def _kv(kv) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision)


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``http://host:port`` -> (host, port); brackets kept."""
    text = endpoint.strip()
    if text.startswith("https://"):
        raise ValueError(f"etcd endpoint {endpoint!r}: TLS to etcd is not supported")
    text = text.removeprefix("http://").rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
    return host, int(port)


# -- storage ----------------------------------------------------------------


class Storage:
    """Key-value storage on an etcd cluster given by ``endpoints`` ("host:port").

    ``request_timeout`` bounds each request; ``connect_timeout`` bounds the
    wait for a member's connection. Use ``await connect()`` (or ``async
    with``) before anything else and ``await close()`` at the end.

    ``open_watches`` counts etcd watch streams currently open through this
    object and ``watches_opened`` all those ever opened (the watch cache and
    its tests rely on them).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        username: Optional[str] = None,
        password: Optional[str] = None,
    ):
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self._addresses = [_parse_endpoint(e) for e in endpoints]
        self.endpoints = [f"{host}:{port}" for host, port in self._addresses]
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._username = username
        self._password = password
        self._clients: list[Optional[aetcd.Client]] = [None] * len(self.endpoints)
        self._active = 0
        self._closed = False
        self._streams: "weakref.WeakSet[WatchStream]" = weakref.WeakSet()
        self.open_watches = 0
        self.watches_opened = 0

    def __repr__(self) -> str:
        return f"Storage({self.endpoints!r}, active={self.endpoints[self._active]!r})"

    async def __aenter__(self) -> "Storage":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # -- connection -----------------------------------------------------

    async def connect(self) -> None:
        """Connect to the first reachable member.

        Raises ``StorageUnavailableError`` naming every endpoint when none
        answers within ``connect_timeout``. Idempotent.
        """
        if self._closed:
            raise StorageError("storage is closed")
        await self._ready_client()

    async def close(self) -> None:
        """Close every connection. Open watch streams end (StopAsyncIteration).

        Idempotent; the object cannot be used afterwards.
        """
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        clients, self._clients = self._clients, [None] * len(self.endpoints)
        for client in clients:
            if client is not None:
                await client.close()

    async def _client(self, index: int) -> aetcd.Client:
        client = self._clients[index]
        if client is None:
            host, port = self._addresses[index]
            client = aetcd.Client(
                host=host,
                port=port,
                username=self._username,
                password=self._password,
                timeout=self.request_timeout,
                options=dict(_CHANNEL_OPTIONS),
            )
            self._clients[index] = client
        await client.connect()  # builds the channel; authenticates if configured
        return client

    async def _ready_client(self) -> tuple[str, aetcd.Client]:
        """Return a member whose connection is up, preferring the active one.

        First pass: take the first member that is connected or connects
        without failing. Second pass (all failing): wait up to
        ``connect_timeout`` for any of them to come back.
        """
        if self._closed:
            raise StorageError("storage is closed")
        # The common case, on every request: the active member is connected.
        client = self._clients[self._active]
        if (client is not None and client.channel is not None
                and client.channel.get_state() == grpc.ChannelConnectivity.READY):
            return self.endpoints[self._active], client
        n = len(self.endpoints)
        order = [(self._active + i) % n for i in range(n)]
        problems: dict[str, str] = {}
        candidates: list[tuple[int, aetcd.Client]] = []
        for index in order:
            endpoint = self.endpoints[index]
            try:
                client = await self._client(index)
            except (aetcd.ClientError, grpc.aio.AioRpcError) as error:
                problems[endpoint] = str(error)
                await self._drop_client(index)
                continue
            if await _settle(client.channel, self.connect_timeout):
                self._active = index
                return endpoint, client
            problems[endpoint] = "connection failed"
            candidates.append((index, client))

        if candidates:
            waits = {
                asyncio.ensure_future(client.channel.channel_ready()): index
                for index, client in candidates
            }
            done, pending = await asyncio.wait(
                waits, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is None:
                    index = waits[task]
                    self._active = index
                    return self.endpoints[index], self._clients[index]
        detail = "; ".join(f"{e} ({p})" for e, p in problems.items())
        raise StorageUnavailableError(
            ", ".join(self.endpoints),
            f"no member reachable within {self.connect_timeout:g}s: {detail}",
        )

    async def _drop_client(self, index: int) -> None:
        client, self._clients[index] = self._clients[index], None
        if client is not None:
            try:
                await client.close()
            except Exception:  # closing a broken client must not hide the real error
                log.debug("closing etcd client for %s failed", self.endpoints[index], exc_info=True)

    def _demote(self, endpoint: str) -> None:
        """After a transport failure, prefer the next member for the next request."""
        index = self.endpoints.index(endpoint)
        if self._active == index:
            self._active = (index + 1) % len(self.endpoints)

    async def _unary(self, method: str, request, *, retry: bool):
        """Send one KV request. ``retry``: safe to resend on another member."""
        problems = []
        for _ in range(len(self.endpoints)):
            endpoint, client = await self._ready_client()
            try:
                return await getattr(client.kvstub, method)(
                    request, timeout=self.request_timeout, metadata=client.metadata
                )
            except grpc.aio.AioRpcError as error:
                if error.code() not in _TRANSPORT_CODES:
                    raise await self._translate(error, endpoint, request) from error
                self._demote(endpoint)
                if not retry:
                    raise StorageUnavailableError(
                        endpoint,
                        f"{error.code().name}: {error.details()}"
                        " (the write was sent; its outcome is unknown)",
                    ) from error
                problems.append(f"{endpoint} ({error.code().name}: {error.details()})")
        raise StorageUnavailableError(", ".join(self.endpoints), "; ".join(problems))

    async def _translate(self, error: grpc.aio.AioRpcError, endpoint: str, request) -> StorageError:
        details = error.details() or ""
        requested = getattr(request, "revision", 0)
        if error.code() == grpc.StatusCode.OUT_OF_RANGE:
            if "compacted" in details:
                compact_revision = await self._probe_compact_revision()
                return CompactedError(compact_revision, requested_revision=requested)
            if "future revision" in details:
                return FutureRevisionError(requested)
        return StorageError(f"etcd {endpoint} refused the request: {error.code().name}: {details}")

    async def _probe_compact_revision(self) -> int:
        """Ask etcd for its compaction revision (0 if unknown).

        etcd reports it only to a watch that starts below it, so start one at
        revision 1 on a key nobody uses and read the answer.
        """
        try:
            stream = WatchStream(self, _COMPACT_PROBE_KEY, 1, probe=True)
            async with stream:
                await asyncio.wait_for(stream.__anext__(), _COMPACT_PROBE_TIMEOUT)
        except CompactedError as error:
            return error.compact_revision
        except (asyncio.TimeoutError, StorageError, StopAsyncIteration):
            pass
        return 0

    # -- key-value operations ---------------------------------------------

    async def create(self, key: bytes, value: bytes) -> int:
        """Store ``value`` at ``key`` if the key does not exist.

        Returns the revision of the write (the new key's create and mod
        revision). Raises ``KeyExistsError`` if the key exists; then nothing
        was written.
        """
        request = rpc.TxnRequest(
            compare=[_mod_revision_is(key, 0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
        )
        response = await self._unary("Txn", request, retry=False)
        if not response.succeeded:
            raise KeyExistsError(key)
        return response.header.revision

    async def get(self, key: bytes) -> KeyValue:
        """Return the current value of ``key``; ``KeyNotFoundError`` if absent."""
        response = await self._unary("Range", rpc.RangeRequest(key=key), retry=True)
        if not response.kvs:
            raise KeyNotFoundError(key)
        return _kv(response.kvs[0])

    async def update(self, key: bytes, value: bytes, expected_mod_revision: int) -> int:
        """Replace the value of ``key`` if its mod revision is ``expected_mod_revision``.

        Returns the revision of the write. Raises ``KeyNotFoundError`` if the
        key does not exist and ``ConflictError(current_mod_revision)`` if it
        was modified since; either way nothing was written.
        ``expected_mod_revision`` must be positive (use ``create`` for new keys).
        """
        if expected_mod_revision <= 0:
            raise ValueError("expected_mod_revision must be a positive revision")
        request = rpc.TxnRequest(
            compare=[_mod_revision_is(key, expected_mod_revision)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        response = await self._unary("Txn", request, retry=False)
        if not response.succeeded:
            raise _refusal(key, expected_mod_revision, response)
        return response.header.revision

    async def delete(
        self, key: bytes, expected_mod_revision: Optional[int] = None
    ) -> tuple[KeyValue, int]:
        """Delete ``key``, only if its mod revision is ``expected_mod_revision`` when given.

        Returns the deleted ``KeyValue`` (its last value and revisions) and
        the revision of the deletion. Raises ``KeyNotFoundError`` if the key
        does not exist and ``ConflictError`` if the revision differs;
        either way nothing was deleted.
        """
        delete = rpc.DeleteRangeRequest(key=key, prev_kv=True)
        if expected_mod_revision is None:
            response = await self._unary("DeleteRange", delete, retry=False)
            if not response.prev_kvs:
                raise KeyNotFoundError(key)
            return _kv(response.prev_kvs[0]), response.header.revision

        request = rpc.TxnRequest(
            compare=[_mod_revision_is(key, expected_mod_revision)],
            success=[rpc.RequestOp(request_delete_range=delete)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        response = await self._unary("Txn", request, retry=False)
        if not response.succeeded:
            raise _refusal(key, expected_mod_revision, response)
        deleted = response.responses[0].response_delete_range.prev_kvs
        if not deleted:  # expected 0 on a missing key: the compare held, nothing to delete
            raise KeyNotFoundError(key)
        return _kv(deleted[0]), response.header.revision

    async def list(
        self,
        prefix: bytes,
        revision: int = 0,
        start_key: Optional[bytes] = None,
        limit: int = 0,
    ) -> ListResult:
        """Read the keys starting with ``prefix``, in key order.

        ``revision`` 0 reads the latest state, otherwise the state at that
        revision; the result's ``revision`` is the one read at (use it for
        the following pages and to start a watch). ``start_key`` (inclusive,
        within the prefix) resumes a paginated read; ``limit`` 0 means no
        limit; ``more`` says whether keys remain after the returned ones.

        Raises ``CompactedError`` if ``revision`` has been compacted and
        ``FutureRevisionError`` if it is ahead of etcd.
        """
        if revision < 0 or limit < 0:
            raise ValueError("revision and limit must not be negative")
        if start_key is not None and not start_key.startswith(prefix):
            raise ValueError(f"start_key {start_key!r} is outside prefix {prefix!r}")
        first = start_key if start_key is not None else prefix
        request = rpc.RangeRequest(
            key=first or b"\x00",
            range_end=prefix_end(prefix),
            revision=revision,
            limit=limit,
        )
        response = await self._unary("Range", request, retry=True)
        return ListResult(
            items=[_kv(kv) for kv in response.kvs],
            revision=revision or response.header.revision,
            more=response.more,
        )

    async def current_revision(self) -> int:
        """etcd's current revision (a linearizable read)."""
        request = rpc.RangeRequest(key=_COMPACT_PROBE_KEY, count_only=True)
        response = await self._unary("Range", request, retry=True)
        return response.header.revision

    async def compact(self, revision: int, physical: bool = False) -> None:
        """Discard history before ``revision`` (reads at ``revision`` still work).

        ``physical`` waits until the space is reclaimed in etcd's database.
        Raises ``CompactedError`` if ``revision`` is not above the current
        compaction revision and ``FutureRevisionError`` if it is ahead of etcd.
        """
        request = rpc.CompactionRequest(revision=revision, physical=physical)
        await self._unary("Compact", request, retry=True)

    def watch(self, prefix: bytes, start_revision: int) -> "WatchStream":
        """Watch every key starting with ``prefix`` from ``start_revision`` (inclusive).

        Returns a ``WatchStream``: an async iterator of ``WatchEvent`` in
        revision order, with previous values. The etcd watch opens on the
        first iteration. Iterating raises ``CompactedError`` if
        ``start_revision`` is below etcd's compaction revision (etcd reports
        it within ~100 ms of opening), or if a DELETE's previous value has
        been compacted; ``StorageUnavailableError`` if the connection breaks
        (resume with a new watch from the last revision seen + 1).

        Close it with ``close()``/``aclose()`` or ``async with``; cancelling
        the task that iterates it closes it too.
        """
        if start_revision <= 0:
            raise ValueError("start_revision must be positive (read current_revision() first)")
        return WatchStream(self, prefix, start_revision)


def _mod_revision_is(key: bytes, revision: int):
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision
    )


def _refusal(key: bytes, expected: int, response) -> StorageError:
    kvs = response.responses[0].response_range.kvs
    if not kvs:
        return KeyNotFoundError(key)
    return ConflictError(kvs[0].mod_revision, key=key, expected_mod_revision=expected)


async def _settle(channel: grpc.aio.Channel, timeout: float) -> bool:
    """Wait until the channel is READY (True) or failing/timed out (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = channel.get_state(try_to_connect=True)
    while True:
        if state == grpc.ChannelConnectivity.READY:
            return True
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            return False
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except asyncio.TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)


# -- watch ------------------------------------------------------------------


class WatchStream:
    """One etcd watch (its own gRPC stream), as an async iterator of ``WatchEvent``.

    Not safe to iterate from two tasks at once. ``close()`` is synchronous,
    idempotent, and makes a pending or later ``__anext__`` stop iteration.
    ``last_revision`` is the revision of the last event returned (0 before).
    """

    def __init__(
        self, storage: Storage, prefix: bytes, start_revision: int, *, probe: bool = False
    ):
        self._storage = storage
        self.prefix = prefix
        self.start_revision = start_revision
        self.last_revision = 0
        # A probe watches one key and is left out of the watch counters.
        self._probe = probe
        self._call = None
        self._endpoint = ""
        self._pending: collections.deque = collections.deque()
        self._closed = False
        storage._streams.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._call is not None else "new")
        return f"WatchStream({self.prefix!r}, from={self.start_revision}, {state})"

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __aenter__(self) -> "WatchStream":
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        call, self._call = self._call, None
        if call is not None:
            if not self._probe:
                self._storage.open_watches -= 1
            call.cancel()

    def __del__(self):
        # Safety net for streams dropped without close(): release the etcd watch.
        if not self._closed and self._call is not None:
            try:
                self.close()
            except Exception:
                pass

    async def __anext__(self) -> WatchEvent:
        try:
            while True:
                if self._pending:
                    item = self._pending.popleft()
                    if isinstance(item, BaseException):
                        raise item
                    self.last_revision = item.mod_revision
                    return item
                if self._closed:
                    raise StopAsyncIteration
                if self._call is None:
                    await self._open()
                self._receive(await self._read())
        except StopAsyncIteration:
            self.close()
            raise
        except BaseException:
            self.close()
            raise

    async def _open(self) -> None:
        self._endpoint, client = await self._storage._ready_client()
        if self._closed:
            raise StopAsyncIteration
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        self._call = call
        if not self._probe:
            self._storage.open_watches += 1
            self._storage.watches_opened += 1
        create = rpc.WatchCreateRequest(
            key=self.prefix,
            start_revision=self.start_revision,
            prev_kv=True,
        )
        if not self._probe:
            create.range_end = prefix_end(self.prefix)
        try:
            await call.write(rpc.WatchRequest(create_request=create))
        except grpc.aio.AioRpcError as error:
            raise self._unavailable(error) from error
        except asyncio.CancelledError:
            self._raise_if_closed()
            raise

    async def _read(self):
        call = self._call
        try:
            response = await call.read()
        except grpc.aio.AioRpcError as error:
            self._raise_if_closed()
            if error.code() in _TRANSPORT_CODES:
                raise self._unavailable(error) from error
            raise StorageError(
                f"etcd {self._endpoint} ended the watch on {self.prefix!r}:"
                f" {error.code().name}: {error.details()}"
            ) from error
        except asyncio.CancelledError:
            self._raise_if_closed()
            raise
        if response is grpc.aio.EOF:
            self._raise_if_closed()
            raise StorageUnavailableError(self._endpoint, f"watch stream on {self.prefix!r} closed")
        return response

    def _raise_if_closed(self) -> None:
        """A read interrupted by close() (ours, or Storage.close()) ends iteration.

        gRPC reports a locally cancelled call as CancelledError in the
        reading task; that is not a cancellation of the task itself unless
        the task really is being cancelled.
        """
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return
        if self._closed or self._storage._closed:
            raise StopAsyncIteration

    def _unavailable(self, error: grpc.aio.AioRpcError) -> StorageUnavailableError:
        self._storage._demote(self._endpoint)
        return StorageUnavailableError(
            self._endpoint,
            f"watch on {self.prefix!r} broke: {error.code().name}: {error.details()}",
        )

    def _receive(self, response) -> None:
        if response.compact_revision:
            next_revision = self.last_revision + 1 if self.last_revision else self.start_revision
            self._pending.append(
                CompactedError(response.compact_revision, requested_revision=next_revision)
            )
            return
        if response.canceled:
            self._pending.append(
                StorageError(f"etcd {self._endpoint} canceled the watch on {self.prefix!r}: "
                             f"{response.cancel_reason or 'no reason given'}")
            )
            return
        for event in response.events:
            kv = event.kv
            if event.type == rpc.Event.DELETE:
                if not event.HasField("prev_kv"):
                    # etcd reads the previous value at revision-1; it is gone
                    # only if that revision was compacted.
                    self._pending.append(
                        CompactedError(kv.mod_revision, requested_revision=kv.mod_revision - 1)
                    )
                    return
                prev = event.prev_kv
                self._pending.append(
                    WatchEvent("DELETE", kv.key, b"", prev.value, kv.mod_revision,
                               0, prev.mod_revision)
                )
            elif event.HasField("prev_kv"):
                prev = event.prev_kv
                self._pending.append(
                    WatchEvent("PUT", kv.key, kv.value, prev.value, kv.mod_revision,
                               kv.create_revision, prev.mod_revision)
                )
            else:
                self._pending.append(
                    WatchEvent("PUT", kv.key, kv.value, None, kv.mod_revision, kv.create_revision)
                )
