"""The benchmark's upstream: a minimal OpenAI-realtime-shaped WebSocket server that echoes audio at once.

On connect it sends `session.created`; every `input_audio_buffer.append` is answered immediately with one
`response.output_audio.delta` carrying the same base64 audio (same size), written in the same `data_received`
call, so the upstream is never what a measurement waits on. Other client events are read and ignored.
It never parses JSON: the audio field is found by its key, which the generator and the relay (byte-for-byte
forwarding) never reorder. I/O: one listening socket on 127.0.0.1.

Run alone: `python -m bench.echo [--port P]`; it prints `{"port": P}` on its first stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import cast

from bench import frames

APPEND_MARK = b'"input_audio_buffer.append"'
AUDIO_KEY = b'"audio":"'


def session_created(n: int) -> bytes:
    event = {
        "type": "session.created",
        "event_id": f"event_created_{n}",
        "session": {
            "id": f"sess_echo_{n}",
            "object": "realtime.session",
            "type": "realtime",
            "model": "bench-echo",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "echo"},
            },
        },
    }
    return json.dumps(event, separators=(",", ":")).encode()


def delta_prefix(n: int) -> bytes:
    return (
        b'{"type":"response.output_audio.delta","event_id":"event_d%d","response_id":"resp_%d",'
        b'"item_id":"item_%d","output_index":0,"content_index":0,"delta":"' % (n, n, n)
    )


class EchoConnection(asyncio.Protocol):
    counter = 0

    def __init__(self) -> None:
        EchoConnection.counter += 1
        self.n = EchoConnection.counter
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.open = False
        self.reader = frames.FrameReader()
        self.prefix = delta_prefix(self.n)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > frames.MAX_HEADER_BYTES:
                    transport.close()
                return
            try:
                answer = frames.server_response(bytes(self.head[:end]))
            except frames.ProtocolError:
                transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                transport.close()
                return
            self.open = True
            rest = bytes(self.head[end + 4 :])
            self.head = bytearray()
            transport.write(answer + frames.encode_frame(session_created(self.n)))
            if not rest:
                return
            data = rest
        try:
            received = self.reader.feed(data)
        except frames.ProtocolError:
            transport.abort()
            return
        out: list[bytes] = []
        prefix = self.prefix
        for frame in received:
            opcode = frame.opcode
            if opcode == frames.OP_TEXT:
                payload = frame.payload
                if APPEND_MARK in payload:
                    start = payload.find(AUDIO_KEY)
                    if start >= 0:
                        start += len(AUDIO_KEY)
                        stop = payload.find(b'"', start)
                        if stop > start:
                            out.append(frames.encode_frame(prefix + payload[start:stop] + b'"}'))
            elif opcode == frames.OP_PING:
                out.append(frames.encode_frame(frame.payload, frames.OP_PONG))
            elif opcode == frames.OP_CLOSE:
                out.append(frames.encode_frame(frame.payload[:2] or frames.close_payload(1000), frames.OP_CLOSE))
                transport.write(b"".join(out))
                transport.close()
                return
        if out:
            transport.write(b"".join(out))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoConnection, "127.0.0.1", port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": bound, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
