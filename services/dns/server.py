"""The cluster DNS server: asyncio over UDP and TCP, dnspython for the wire.

`DnsServer.handle(wire, tcp)` turns one query into one response:

- a name in the cluster domain is answered from `records.Records`
  (authoritative: AA set);
- any other name is forwarded to the upstream resolvers when some are
  configured (the first that answers wins; SERVFAIL when none does) and
  refused (REFUSED) otherwise, so the server is never an open resolver by
  accident;
- a malformed message gets FORMERR (or is dropped when not even its header
  can be read), an opcode other than QUERY gets NOTIMP, a class other than
  IN gets REFUSED.

Over UDP a response larger than the client allows (512 bytes, or its EDNS
payload size) is sent truncated with TC set, so the client retries over TCP.
A query that cannot be answered never crashes the server.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from services.dns.records import Records

log = logging.getLogger(__name__)

MAX_UDP_PAYLOAD = 1232  # the DNS flag day's safe EDNS size
FORWARD_TIMEOUT = 2.0


class DnsServer:
    """Answers queries; `start` binds UDP and TCP on (host, port)."""

    def __init__(self, records: Records, upstreams: list[tuple[str, int]] = (),
                 forward_timeout: float = FORWARD_TIMEOUT):
        self.records = records
        self.upstreams = list(upstreams)
        self.forward_timeout = forward_timeout
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self.address: tuple[str, int] | None = None

    # --- the logic ---

    async def handle(self, wire: bytes, tcp: bool = False) -> bytes | None:
        """The response to one query message, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return self._formerr(wire)
        if query.flags & dns.flags.QR:
            return None  # a response: never answer those
        try:
            response = await self._respond(query, tcp)
        except Exception:
            log.exception("query %s failed", query.question)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
        if isinstance(response, bytes):
            return response
        return self._to_wire(query, response, tcp)

    async def _respond(self, query: dns.message.Message, tcp: bool):
        response = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        if not self.records.is_cluster_name(question.name):
            return await self._forward(query, response, tcp)
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        answer = self.records.answer(question.name, question.rdtype)
        response.flags |= dns.flags.AA
        if self.upstreams:
            response.flags |= dns.flags.RA
        response.set_rcode(answer.rcode)
        response.answer.extend(answer.answer)
        response.authority.extend(answer.authority)
        response.additional.extend(answer.additional)
        return response

    async def _forward(self, query, response, tcp: bool):
        if not self.upstreams:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        for host, port in self.upstreams:
            try:
                if tcp:
                    upstream = await dns.asyncquery.tcp(query, host, port=port,
                                                        timeout=self.forward_timeout)
                else:
                    upstream = await dns.asyncquery.udp(query, host, port=port,
                                                        timeout=self.forward_timeout,
                                                        ignore_unexpected=True)
            except (dns.exception.DNSException, OSError) as e:
                log.warning("upstream %s:%d failed for %s: %s", host, port,
                            query.question[0].name, e)
                continue
            upstream.id = query.id
            # Pass the upstream's answer on as it is (a truncated one makes the
            # client retry over TCP, which we forward over TCP).
            return upstream
        response.flags |= dns.flags.RA
        response.set_rcode(dns.rcode.SERVFAIL)
        return response

    def _to_wire(self, query, response, tcp: bool) -> bytes:
        if tcp:
            return response.to_wire(max_size=65535)
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC | (response.flags & (dns.flags.AA | dns.flags.RA))
            truncated.set_rcode(response.rcode())
            return truncated.to_wire(max_size=limit)

    @staticmethod
    def _formerr(wire: bytes) -> bytes | None:
        """FORMERR echoing the id, when at least the header is there."""
        if len(wire) < 12:
            return None
        (msg_id, flags) = struct.unpack("!HH", wire[:4])
        if flags & 0x8000:  # QR: a response
            return None
        opcode_bits = flags & 0x7800
        return struct.pack("!HHHHHH", msg_id, 0x8000 | opcode_bits | dns.rcode.FORMERR, 0, 0, 0, 0)

    # --- the sockets ---

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind UDP, then TCP on the same port (port 0: a free one); the address."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, port))
        bound = self._transport.get_extra_info("sockname")[:2]
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, host, bound[1])
        except OSError:
            self._transport.close()
            raise
        self.address = (bound[0], bound[1])
        return self.address

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Queries one after another on one connection (RFC 7766), idle timeout 10 s."""
        try:
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), 10)
                    (length,) = struct.unpack("!H", header)
                    wire = await asyncio.wait_for(reader.readexactly(length), 10)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                reply = await self.handle(wire, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except Exception:
            log.exception("TCP connection failed")
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer):
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task] = set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr) -> None:
        reply = await self.server.handle(data)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc) -> None:  # ICMP errors from clients that went away
        log.debug("UDP error: %s", exc)
