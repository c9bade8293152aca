"""The attacks of `bench.attacks`, each a bounded Trio function against a chatserver on 127.0.0.1.

An attack gets the server's `Target` and a `Report`: it opens its connections through `report.connect` (so
that what the server answered on each is summarised afterwards, even when the attack is cut off by its
time limit) and adds notes of its own (bytes sent, how many connections were served...). Every loop is
bounded in count, and every wait in time. Streams of `FrameClient.check` (a well-formed Health.Check on the
attacker's own connection, to see whether it survived) are reported in the notes, not in the outcome.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc  # type: ignore[import-untyped]
import hpack
import trio

import trio_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from tests.raw_h2 import (
    ANY_TIME,
    INITIAL_WINDOW_SIZE,
    Connecting,
    FrameClient,
    Header,
    connect_frames,
    error_name,
    grpc_message,
    request_headers,
    status_name,
)

KiB = 1024
MiB = 1024 * KiB
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
POST = "/rpc.ChatService/Post"
EMPTY_REQUEST = grpc_message(b"")  # an empty HealthCheckRequest: how is the server as a whole?
MAX_STREAM_ID = 2**31 - 1


@dataclass(frozen=True)
class Target:
    port: int
    rss_mib: Callable[[], float | None]  # the server's VmRSS now (None once it is gone)


@dataclass
class Report:
    """What an attack leaves for the table: the connections it opened and its notes."""

    peers: list[FrameClient] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def connect(
        self,
        target: Target,
        *,
        preface: bool = True,
        settings: dict[int, int] | None = None,
        wait_settings: bool = True,
        connecting: Connecting = ANY_TIME,
    ) -> AsyncIterator[FrameClient]:
        async with connect_frames(
            target.port,
            preface=preface,
            settings=settings,
            wait_settings=wait_settings,
            connecting=connecting,
        ) as peer:
            self.peers.append(peer)
            yield peer

    def note(self, text: str) -> None:
        self.notes.append(text)

    def outcome(self) -> str:
        """What the attacker saw, over all its connections: GOAWAYs, resets, statuses, ACKs, closes."""
        seen: Counter[str] = Counter()
        samples: dict[str, str] = {}
        for peer in self.peers:
            if peer.seen.goaway is not None:
                seen[_goaway(*peer.seen.goaway)] += 1
            elif peer.seen.closed_after is not None or peer.seen.broken:
                seen["closed without GOAWAY"] += 1
            for stream_id, stream in peer.seen.streams.items():
                if stream_id in peer.own_checks:
                    continue
                if stream.reset is not None:
                    seen[f"RST_STREAM {error_name(stream.reset)}"] += 1
                if stream.ended:
                    status = status_name(stream)
                    seen[status] += 1
                    message = (stream.status_field(b"grpc-message") or b"").decode(errors="replace")
                    samples.setdefault(status, message)
        parts = [_counted(name, count, samples.get(name)) for name, count in seen.items()]
        if acks := sum(peer.seen.ping_acks for peer in self.peers):
            parts.append(f"{acks} PING ACKs")
        if any(peer.seen.settings_acks > 1 for peer in self.peers):
            parts.append(f"{sum(peer.seen.settings_acks for peer in self.peers)} SETTINGS ACKs")
        return "; ".join(parts + self.notes) or "no answer"


def _goaway(code: int, debug: bytes) -> str:
    return f"GOAWAY {error_name(code)}" + (f" {debug.decode(errors='replace')!r}" if debug else "")


def _counted(name: str, count: int, sample: str | None) -> str:
    text = name if count == 1 else f"{name} x{count}"
    if sample:
        text += f' "{sample[:70]}"'
    return text


Attack = Callable[[Target, Report], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    attack: Attack
    timeout: float = 20.0  # the attack is cut off past this


CASES: dict[str, Case] = {}


def case(name: str, what: str, timeout: float = 20.0) -> Callable[[Attack], Attack]:
    def register(attack: Attack) -> Attack:
        CASES[name] = Case(name, what, attack, timeout)
        return attack

    return register


def unary(
    peer: FrameClient, stream_id: int, headers: list[Header] | None = None, body: bytes = EMPTY_REQUEST
) -> bytes:
    """HEADERS and a DATA frame ending the stream: a whole unary request (Health.Check unless told)."""
    frames = peer.frames
    headers = headers or request_headers(HEALTH_CHECK)
    return frames.headers(stream_id, headers) + frames.data(stream_id, body, end_stream=True)


def without(name: bytes, headers: list[Header]) -> list[Header]:
    return [header for header in headers if header[0] != name]


def replacing(name: bytes, value: bytes, headers: list[Header]) -> list[Header]:
    return [(name, value) if header[0] == name else header for header in headers]


async def then_check(peer: FrameClient, report: Report) -> None:
    report.note(f"then Health.Check on the same connection: {await peer.check()}")


async def answered(peer: FrameClient, stream_ids: list[int], within: float = 3) -> None:
    await peer.wait_until(lambda: all(peer.seen.streams[i].done for i in stream_ids), within)


# -- one write ends the process (issue 10): a refused request and its RST_STREAM together -----------------

REFUSED_REQUESTS = {
    "unknown-method": request_headers("/no.Such/Method"),
    "text-plain": request_headers(HEALTH_CHECK, content_type=b"text/plain"),
    "bad-grpc-timeout": request_headers(HEALTH_CHECK, (b"grpc-timeout", b"abc")),
    "uppercase-header": request_headers(HEALTH_CHECK, (b"X-Upper", b"a")),
}


async def refused_then_reset(headers: list[Header], target: Target, report: Report) -> None:
    async with report.connect(target) as peer:
        stream_id = peer.stream_id()
        write = peer.frames.headers(stream_id, headers) + peer.frames.rst(stream_id)
        await peer.send(write)
        report.note(f"{len(write)} bytes in one write")
        await then_check(peer, report)


for _variant, _headers in REFUSED_REQUESTS.items():
    case(f"reset-after-{_variant}", f"HEADERS ({_variant}) + RST_STREAM in one write")(
        functools.partial(refused_then_reset, _headers)
    )


@case("refused-stream-triples", "300 HEADERS+DATA+RST triples (> max_concurrent_streams 256) in one write")
async def refused_stream_triples(target: Target, report: Report) -> None:
    async with report.connect(target) as peer:
        ids = [peer.stream_id() for _ in range(300)]
        await peer.send(b"".join(unary(peer, i) + peer.frames.rst(i) for i in ids))
        await then_check(peer, report)


@case("rapid-reset-paced", "HEADERS+DATA+RST, one stream per write, 5,000 a second, up to 3,000 streams")
async def rapid_reset_paced(target: Target, report: Report) -> None:
    async with report.connect(target) as peer:
        streams, started = 0, trio.current_time()
        while streams < 3000 and not peer.closed:
            stream_id = peer.stream_id()
            if await peer.send(unary(peer, stream_id) + peer.frames.rst(stream_id)):
                streams += 1
            await trio.sleep_until(started + streams / 5000)  # 5 times the server's default limit
        await peer.wait_closed(3)
        report.note(f"{streams} streams written")


@case("rapid-reset-batched", "HEADERS+DATA+RST triples, 250 per write, 20 writes (5,000 streams)")
async def rapid_reset_batched(target: Target, report: Report) -> None:
    async with report.connect(target) as peer:
        streams = 0
        for _ in range(20):
            ids = [peer.stream_id() for _ in range(250)]
            if not await peer.send(b"".join(unary(peer, i) + peer.frames.rst(i) for i in ids)):
                break
            streams += len(ids)
        await peer.wait_closed(3)
        report.note(f"{streams} streams written")


# -- memory: partial messages ---------------------------------------------------------------------------

PARTIAL_BODY = b"\x00" + (4 * MiB).to_bytes(4, "big") + bytes(int(3.9 * MiB))  # 4 MiB announced, 3.9 sent


async def partial_messages(target: Target, report: Report, connections: int, seconds: float) -> str:
    """`connections` x 100 streams, each sending PARTIAL_BODY as fast as the windows allow, then closing.

    Returns how much of it went out, and how fast: a server that stops granting credit makes it stall.
    """
    peers: list[FrameClient] = []

    async def one_connection() -> None:
        async with report.connect(target) as peer:
            peers.append(peer)
            ids = [peer.stream_id() for _ in range(100)]
            await peer.send(b"".join(peer.frames.headers(i, request_headers(HEALTH_CHECK)) for i in ids))
            with trio.move_on_after(seconds):
                async with trio.open_nursery() as nursery:
                    for stream_id in ids:
                        nursery.start_soon(peer.send_body, stream_id, PARTIAL_BODY)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one_connection)
    sent = sum(peer.body_sent for peer in peers)
    total = connections * 100 * len(PARTIAL_BODY)
    return f"sent {sent / MiB:,.0f} of {total / MiB:,.0f} MiB in {trio.current_time() - started:.1f} s"


@case("partial-messages-10x100", "10 connections x 100 streams x (4 MiB prefix + 3.9 MiB)", timeout=90)
async def partial_messages_10(target: Target, report: Report) -> None:
    report.note(await partial_messages(target, report, connections=10, seconds=60))


@case("partial-messages-1x100-x3", "1 connection x 100 streams of partial messages, 3 times", timeout=90)
async def partial_messages_repeated(target: Target, report: Report) -> None:
    after = []
    for _ in range(3):
        sent = await partial_messages(target, report, connections=1, seconds=20)
        await trio.sleep(2)  # what RSS settles to once the connection is gone, not a synchronisation
        rss = target.rss_mib()
        after.append("gone" if rss is None else f"{rss:.0f}")
    report.note(f"each run {sent}; RSS 2 s after each run: {' -> '.join(after)} MiB")


# -- floods of control frames -----------------------------------------------------------------------------


async def control_flood(
    target: Target,
    report: Report,
    frame: Callable[[FrameClient, int], bytes],
    what: str,
    all_answered: Callable[[FrameClient, int], bool] = lambda peer, sent: True,
) -> None:
    """100,000 frames made by `frame(peer, index)`, 1,000 per write, on one connection.

    Then up to 5 s for `all_answered(peer, frames sent)`, and a Health.Check on that connection.
    """
    async with report.connect(target) as peer:
        sent = 0
        while sent < 100_000 and await peer.send(b"".join(frame(peer, sent + i) for i in range(1000))):
            sent += 1000
        report.note(f"{sent:,} {what} written")
        await peer.wait_until(lambda: all_answered(peer, sent), 5)
        await then_check(peer, report)


@case("ping-flood", "100,000 PINGs on one connection, 1,000 per write")
async def ping_flood(target: Target, report: Report) -> None:
    await control_flood(
        target,
        report,
        lambda peer, i: peer.frames.ping(i),
        "PINGs",
        lambda peer, sent: peer.seen.ping_acks >= sent,
    )


@case("settings-flood", "100,000 empty SETTINGS frames, 1,000 per write")
async def settings_flood(target: Target, report: Report) -> None:
    await control_flood(
        target,
        report,
        lambda peer, i: peer.frames.settings(),
        "SETTINGS",
        lambda peer, sent: peer.seen.settings_acks > sent,  # and the ACK of the preface's SETTINGS
    )


@case("window-update-flood", "100,000 connection WINDOW_UPDATEs of 1 byte, 1,000 per write")
async def window_update_flood(target: Target, report: Report) -> None:
    await control_flood(target, report, lambda peer, i: peer.frames.window_update(0, 1), "WINDOW_UPDATEs")


@case("empty-data-flood", "a Post stream, then 100,000 empty DATA frames on it, 1,000 per write")
async def empty_data_flood(target: Target, report: Report) -> None:
    async with report.connect(target) as peer:
        stream_id = peer.stream_id()
        await peer.send(peer.frames.headers(stream_id, request_headers(POST)))
        empty = peer.frames.data(stream_id, b"")
        sent = 0
        while sent < 100_000 and not peer.seen.streams[stream_id].done and await peer.send(empty * 1000):
            sent += 1000
        report.note(f"{sent:,} empty DATA frames written")
        await then_check(peer, report)


@case("continuation-flood", "HEADERS without END_HEADERS, then up to 256 MiB of CONTINUATION")
async def continuation_flood(target: Target, report: Report) -> None:
    block = hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(b"x-flood", b"a" * 16_000)], huffman=False)
    async with report.connect(target) as peer:
        stream_id = peer.stream_id()
        await peer.send(peer.frames.headers(stream_id, request_headers(HEALTH_CHECK), end_headers=False))
        batch = peer.frames.continuation(stream_id, block) * 16  # 256 KiB
        written = 0
        while written < 256 * MiB // len(batch) and await peer.send(batch):
            written += 1
        await peer.wait_closed(3)
        report.note(f"{written * 16:,} CONTINUATION frames of 16 KB written before the server closed")


# -- flow control -----------------------------------------------------------------------------------------


@case(
    "window-update-overflow", "WINDOW_UPDATE past 2^31-1 on a stream (Health.Watch), then on the connection"
)
async def window_update_overflow(target: Target, report: Report) -> None:
    async with report.connect(target) as peer:
        watch = peer.stream_id()
        await peer.send(unary(peer, watch, request_headers(HEALTH_WATCH)))
        await peer.wait_until(lambda: len(peer.seen.streams[watch].data) > 0, 3)  # the first status came
        await peer.send(peer.frames.window_update(watch, MAX_STREAM_ID))
        await answered(peer, [watch])
        report.note(f"stream overflow: {_stream_outcome(peer, watch)}")
        await then_check(peer, report)
        await peer.send(peer.frames.window_update(0, MAX_STREAM_ID))
        await peer.wait_closed(3)
        report.note(f"connection overflow: {'closed' if peer.closed else 'connection still open'}")


def _stream_outcome(peer: FrameClient, stream_id: int) -> str:
    stream = peer.seen.streams[stream_id]
    if stream.reset is not None:
        return f"RST_STREAM {error_name(stream.reset)}"
    return status_name(stream) if stream.ended else "stream still open"


@case("zero-window", "SETTINGS_INITIAL_WINDOW_SIZE 0, 100 Health.Watch streams held 3 s")
async def zero_window(target: Target, report: Report) -> None:
    async with report.connect(target, settings={INITIAL_WINDOW_SIZE: 0}) as peer:
        ids = [peer.stream_id() for _ in range(100)]
        await peer.send(b"".join(unary(peer, i, request_headers(HEALTH_WATCH)) for i in ids))
        await trio.sleep(3)  # the hold is the attack: nothing should pile up meanwhile
        got_headers = sum(1 for i in ids if peer.seen.streams[i].headers)
        report.note(f"{got_headers} of 100 streams got response headers, none can get data")


# -- messages and headers ---------------------------------------------------------------------------------


async def one_request(
    target: Target, report: Report, headers: list[Header], body: bytes, end: bool = True
) -> None:
    async with report.connect(target) as peer:
        stream_id = peer.stream_id()
        frames = peer.frames
        await peer.send(frames.headers(stream_id, headers) + frames.data(stream_id, body, end_stream=end))
        await answered(peer, [stream_id])
        await then_check(peer, report)


@case("bad-length-prefix", "Health.Check announcing a 5 MiB message (max 4 MiB), only its prefix sent")
async def bad_length_prefix(target: Target, report: Report) -> None:
    await one_request(
        target, report, request_headers(HEALTH_CHECK), b"\x00" + (5 * MiB).to_bytes(4, "big"), end=False
    )


@case("truncated-message", "Health.Check whose message ends one byte short, then END_STREAM")
async def truncated_message(target: Target, report: Report) -> None:
    await one_request(target, report, request_headers(HEALTH_CHECK), grpc_message(b"\x0a\x01x")[:-1])


@case("bad-protobuf", "Health.Check whose message is not protobuf")
async def bad_protobuf(target: Target, report: Report) -> None:
    await one_request(target, report, request_headers(HEALTH_CHECK), grpc_message(b"\xff\xff\xff"))


@case("header-1mib-value", "Health.Check with one 1 MiB header value (in CONTINUATION frames)")
async def header_1mib_value(target: Target, report: Report) -> None:
    await one_request(target, report, request_headers(HEALTH_CHECK, (b"x-big", b"a" * MiB)), EMPTY_REQUEST)


@case("headers-10000-small", "Health.Check with 10,000 small headers")
async def headers_10000_small(target: Target, report: Report) -> None:
    extra = [(f"x-h{i}".encode(), b"v") for i in range(10_000)]
    await one_request(target, report, request_headers(HEALTH_CHECK, *extra), EMPTY_REQUEST)


BAD_HEADERS = [
    without(b":path", request_headers(HEALTH_CHECK)),
    without(b":scheme", request_headers(HEALTH_CHECK)),
    without(b"te", request_headers(HEALTH_CHECK)),
    request_headers(HEALTH_CHECK, (b":path", b"/again")),
    request_headers(HEALTH_CHECK, (b":status", b"200")),
    request_headers(HEALTH_CHECK, (b"X-Upper", b"a")),
    request_headers(HEALTH_CHECK, (b"connection", b"keep-alive")),
    request_headers(HEALTH_CHECK, (b"bad name", b"a")),
    request_headers(HEALTH_CHECK, (b"x-newline", b"a\r\nb")),
    request_headers(HEALTH_CHECK, content_type=b"text/plain"),
    replacing(b":method", b"GET", request_headers(HEALTH_CHECK)),
]


@case("bad-headers", f"{len(BAD_HEADERS)} requests with malformed headers, one per stream, in one write")
async def bad_headers(target: Target, report: Report) -> None:
    async with report.connect(target) as peer:
        ids = [peer.stream_id() for _ in BAD_HEADERS]
        await peer.send(
            b"".join(unary(peer, i, headers) for i, headers in zip(ids, BAD_HEADERS, strict=True))
        )
        await answered(peer, ids)
        await then_check(peer, report)


# -- connections ------------------------------------------------------------------------------------------


async def many_connections(
    target: Target, report: Report, count: int, *, hold: bool, answer_within: float
) -> None:
    """`count` connections, each making one Health.Check; held open until all have been answered or not.

    With `hold`, every connection stays open (idle) until the last one's answer came or timed out, and
    then 3 s more while other clients are probed; without, each closes as soon as it is answered.
    """
    connecting = Connecting(
        trio.CapacityLimiter(200), within=answer_within
    )  # handshakes at once, each's time
    all_finished, release = trio.Event(), trio.Event()
    outcomes: Counter[str] = Counter()

    def finished(outcome: str) -> None:
        outcomes[outcome] += 1
        if sum(outcomes.values()) == count:
            all_finished.set()

    async def one() -> None:
        try:
            async with report.connect(target, wait_settings=False, connecting=connecting) as peer:
                finished(await peer.check(within=answer_within))
                if hold:
                    await release.wait()
        except trio.TooSlowError:
            finished(f"not connected in {answer_within:g} s")
        except OSError as exc:
            finished(f"connect failed ({exc.strerror or exc})")

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
        with trio.move_on_after(answer_within + 15):
            await all_finished.wait()
        if hold:
            await trio.sleep(3)  # all of them idle at once, while the probes go on
        release.set()
    answers = ", ".join(f"{outcome} x{number}" for outcome, number in outcomes.most_common())
    report.note(f"their Health.Checks: {answers or 'none finished'}")


@case(
    "idle-5000",
    "5,000 connections, each one Health.Check then idle, held while others are probed",
    timeout=60,
)
async def idle_5000(target: Target, report: Report) -> None:
    await many_connections(target, report, 5000, hold=True, answer_within=15)


@case("flood-2000", "2,000 connections at once, each one Health.Check, closed when answered", timeout=45)
async def flood_2000(target: Target, report: Report) -> None:
    await many_connections(target, report, 2000, hold=False, answer_within=10)


@case("no-preface", "100 connections that never send the preface, held up to 15 s", timeout=30)
async def no_preface(target: Target, report: Report) -> None:
    async def one() -> None:
        async with report.connect(target, preface=False) as peer:
            await peer.wait_closed(15)

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(one)
    closed = sorted(p.seen.closed_after for p in report.peers if p.seen.closed_after is not None)
    when = f", after {closed[0]:.1f}-{closed[-1]:.1f} s" if closed else ""
    report.note(f"closed by the server: {len(closed)} of 100{when}")


# -- ordinary clients that do it by accident (issue 10) ---------------------------------------------------

GRPCIO_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]


async def grpcio_cancels(target: Target, report: Report, path: str, calls: int) -> None:
    """A grpcio client that starts `calls` calls to `path`, one at a time, and cancels each one at once."""

    def cancel_in_a_loop() -> str:
        channel = grpc.insecure_channel(f"127.0.0.1:{target.port}", options=GRPCIO_OPTIONS)
        codes: Counter[str] = Counter()
        with channel:
            method = channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)
            for _ in range(calls):
                future = method.future(b"", timeout=3)
                future.cancel()
                try:
                    future.result()
                    codes["OK"] += 1
                except grpc.FutureCancelledError:
                    codes["cancelled"] += 1
                except grpc.RpcError as exc:
                    codes[exc.code().name] += 1
        return ", ".join(f"{code} x{count}" for code, count in codes.most_common())

    report.note(f"grpcio calls: {await trio.to_thread.run_sync(cancel_in_a_loop, abandon_on_cancel=True)}")


@case(
    "grpcio-cancels-unknown-method",
    "grpcio: 1,000 calls to a method the server lacks, each cancelled at once",
)
async def grpcio_cancels_unknown(target: Target, report: Report) -> None:
    await grpcio_cancels(target, report, "/no.Such/Method", 1000)


@case("grpcio-cancels-health-check", "grpcio: 1,000 Health.Check calls, each cancelled at once")
async def grpcio_cancels_health(target: Target, report: Report) -> None:
    await grpcio_cancels(target, report, HEALTH_CHECK, 1000)


@case(
    "trio-grpc-leaves-at-once",
    "our client: `async with stub.X.open()` left at once, on a method the server lacks",
)
async def trio_grpc_leaves_at_once(target: Target, report: Report) -> None:
    unknown = test_pb2.DESCRIPTOR.services_by_name["TestService"]  # chatserver does not serve it
    outcomes: Counter[str] = Counter()
    async with trio_grpc.Channel(f"127.0.0.1:{target.port}") as channel:
        stub = trio_grpc.Stub(channel, unknown)
        for _ in range(100):
            try:
                async with stub.UnaryCall.open(messages_pb2.SimpleRequest(), timeout=3):
                    pass
                outcomes["left"] += 1
            except trio_grpc.RpcError as exc:
                outcomes[exc.code.name] += 1
    report.note("our calls: " + ", ".join(f"{name} x{count}" for name, count in outcomes.most_common()))
