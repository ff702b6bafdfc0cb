"""A recording TCP tee for the real-client tests: listens on 127.0.0.1, relays every connection
to TARGET: the answers unchanged, chunk by chunk as the bytes arrive (a stream stays a stream),
the requests unchanged but for their `Host` line, which names the target as a reverse proxy
would (the proxy refuses a Host that is not its own listener), and appends one JSON line per HTTP/1.1 exchange it saw to RECORD:
{"method", "path", "request": body, "status", "response": body}, bodies as text (UTF-8), a
chunked body de-chunked. So a test can compare what its client received, byte for byte, with
what the upstream mock says it sent, whatever the client (an SDK, or Claude Code, whose
network stack no test can hook).

Usage: python tee.py TARGET_PORT RECORD PORT_FILE
Writes its port to PORT_FILE (one line) once listening; runs until killed or stdin closes.
"""

import asyncio
import json
import sys

MAX_BODY = 16 << 20  # a test's exchange is far smaller; past this, nothing more is recorded


class Messages:
    """Reads HTTP/1.1 messages off one direction of a connection, as the bytes go by."""

    def __init__(self, responses, host=None):
        self.responses = responses
        self.host = host  # when set, each head's Host line is rewritten to it
        self.out = bytearray()  # the bytes read so far, as they go on (see take())
        self.buffer = bytearray()
        self.head = None
        self.body = bytearray()
        self.remaining = None  # content-length left, or None while reading a chunked body
        self.chunked = False
        self.until_close = False
        self.done = []  # (head lines, body) of each complete message

    def feed(self, data):
        self.buffer += data
        while self.step():
            pass

    def take(self):
        """The bytes of complete parts (heads, chunks) read since the last take(), to relay."""
        out, self.out = bytes(self.out), bytearray()
        return out

    def consume(self, n):
        self.out += self.buffer[:n]
        del self.buffer[:n]

    def close(self):
        if self.head is not None and self.until_close:
            self.done.append((self.head, bytes(self.body)))
            self.head = None

    def step(self):
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            if self.host:
                lines = [lines[0]] + [
                    f"Host: {self.host}" if line.lower().startswith("host:") else line for line in lines[1:]
                ]
            self.out += ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            self.head, self.body = lines, bytearray()
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            self.chunked = "chunked" in fields.get("transfer-encoding", "").lower()
            self.remaining = int(fields["content-length"]) if "content-length" in fields else None
            status = lines[0].split(" ")[1] if self.responses else ""
            no_body = status.startswith("1") or status in ("204", "304")
            self.until_close = self.responses and not self.chunked and self.remaining is None and not no_body
            if not self.chunked and not self.until_close and self.remaining is None:
                self.remaining = 0
            return self.finish_if_done() or bool(self.buffer)
        if self.chunked:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return False
            size = int(self.buffer[:end].split(b";")[0], 16)
            if size == 0:
                # The last chunk, then any trailers and an empty line.
                trailer_end = self.buffer.find(b"\r\n\r\n", end)
                if trailer_end < 0:
                    return False
                self.consume(trailer_end + 4)
                self.done.append((self.head, bytes(self.body)))
                self.head = None
                return True
            if len(self.buffer) < end + 2 + size + 2:
                return False
            self.keep(self.buffer[end + 2 : end + 2 + size])
            self.consume(end + 2 + size + 2)
            return True
        if self.until_close:
            self.keep(self.buffer)
            self.consume(len(self.buffer))
            return False
        take = min(self.remaining, len(self.buffer))
        self.keep(self.buffer[:take])
        self.consume(take)
        self.remaining -= take
        return self.finish_if_done()

    def keep(self, data):
        if len(self.body) < MAX_BODY:
            self.body += data

    def finish_if_done(self):
        if not self.chunked and not self.until_close and self.remaining == 0:
            self.done.append((self.head, bytes(self.body)))
            self.head = None
            return True
        return False


def text(body):
    return body.decode("utf-8", errors="replace")


async def main():
    target_port, record_path, port_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    record = open(record_path, "a")

    async def relay(reader, writer, messages, seen):
        try:
            while data := await reader.read(65536):
                if messages.responses:
                    # As it arrives, before it is parsed: the client's timing stays the proxy's.
                    writer.write(data)
                    messages.feed(data)
                    messages.take()
                else:
                    messages.feed(data)
                    writer.write(messages.take())
                await writer.drain()
                seen()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            messages.close()
            seen()
            if not writer.is_closing():
                writer.close()

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        requests, responses = Messages(False, host=f"127.0.0.1:{target_port}"), Messages(True)

        def seen():
            # Pair requests with responses in order (HTTP/1.1, no pipelining).
            while requests.done and responses.done:
                (request_head, request_body) = requests.done.pop(0)
                (response_head, response_body) = responses.done.pop(0)
                method, path, _ = request_head[0].split(" ", 2)
                line = {
                    "method": method,
                    "path": path,
                    "request": text(request_body),
                    "status": int(response_head[0].split(" ")[1]),
                    "response": text(response_body),
                }
                record.write(json.dumps(line) + "\n")
                record.flush()

        await asyncio.gather(
            relay(client_reader, upstream_writer, requests, seen),
            relay(upstream_reader, client_writer, responses, seen),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(port_file, "w") as f:
        f.write(f"{server.sockets[0].getsockname()[1]}\n")
    loop = asyncio.get_running_loop()
    # Exit when stdin closes (the script that started this tee went away).
    await loop.run_in_executor(None, sys.stdin.buffer.read)


if __name__ == "__main__":
    asyncio.run(main())
