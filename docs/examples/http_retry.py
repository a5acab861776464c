"""httpx with resile's retrying transports, against a local server that fails on purpose.

Run it: ``python docs/examples/http_retry.py`` (needs ``httpx``: the ``http`` extra).

The server answers 503 (with ``Retry-After: 0``) twice on every path, then 200.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx

import resile
from resile.http import AsyncRetryTransport, RetryTransport


class Flaky(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[Counter[str]] = Counter()

    def _reply(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = f"{self.command} {self.path}"
        self.seen[key] += 1
        status, body = (503, b"busy") if self.seen[key] % 3 else (200, b"ok")
        self.send_response(status)
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        policy = resile.Retrying(
            backoff=resile.Exponential(0.1, max_delay=2.0), stop=resile.after_attempts(5)
        )
        with httpx.Client(transport=RetryTransport(policy=policy), base_url=base) as client:
            r = client.get("/flaky")  # 503, 503, then 200
            print(f"GET /flaky -> {r.status_code} after {Flaky.seen['GET /flaky']} requests")
            r = client.post("/flaky", json={"order": 1})  # POST is not retried: 503 comes back
            print(f"POST /flaky -> {r.status_code} after {Flaky.seen['POST /flaky']} request")

        async def fetch() -> int:
            async with httpx.AsyncClient(transport=AsyncRetryTransport(), base_url=base) as ac:
                with resile.deadline(5.0):  # every attempt's timeout ends by the deadline
                    return (await ac.get("/flaky", params={"n": 2})).status_code

        print(f"async GET /flaky -> {asyncio.run(fetch())}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    main()
