"""A real HTTP server on 127.0.0.1 that serves images and misbehaves on purpose.

Used by the fetch tests and the end-to-end pipeline tests: every route is one way a web
host can hurt a crawler (errors, throttling, hangs, redirect tricks, truncated or endless
bodies, wrong types, opt-out headers, decompression bombs). It runs an aiohttp
application on its own event loop in a daemon thread, so synchronous code (pytest,
Beam runners) can fetch from it.

    with HostileServer() as server:
        server.add_image("cat", jpeg_bytes)
        fetch_batch([server.url("/img/cat")], settings)
        assert server.requests == ["/img/cat"]
"""
from __future__ import annotations

import asyncio
import collections
import sys
import threading
import time
from pathlib import Path

from aiohttp import web

if __package__ in (None, ""):  # run as a script: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.sample_images import make_bomb_png, make_photo_jpeg, make_png  # noqa: E402

CHUNK = 64 * 1024


class HostileServer:
    """A misbehaving image host. Start with `start()` or use as a context manager.

    Routes (the API the tests rely on):
      /img/{name}              bytes registered with `add_image` (404 when unknown)
      /404, /500               that status
      /flaky/{key}             500 on the first request per key, then a PNG
      /429/{key}?after=S      /429/{key}?after=S       429 with ``Retry-After: S`` (default 1) first, then a PNGstatus=C  C (default 429) with ``Retry-After: S`` (default 1) first, then a PNG
      /hang                    never answers (until the server stops, at most 120 s)
      /redirect-loop           302 to itself
      /redirect-private        302 to http://10.0.0.1/x
      /redirect-to-loopback    302 to http://127.0.0.1:PORT/img/{?name=, default "redirected"}
      /redirect?to=URL         302 to any URL (relative or absolute)
      /redirect-chain/{n}      n redirects, then a PNG
      /truncated               declares more Content-Length than it sends, then hangs up
      /html                    a text/html page
      /typed?type=CT           a PNG body labelled with content type CT
      /empty                   image/jpeg with a zero-byte body
      /endless                 a chunked image/jpeg that never ends
      /big?size=N              N bytes of image/jpeg with an honest Content-Length
      /chunked?size=N          N bytes of image/jpeg, chunked: no Content-Length to refuse early
      /noai                    ``X-Robots-Tag: noai`` with a 1 MiB image body, sent slowly
      /robots?tag=VALUE        a PNG with ``X-Robots-Tag: VALUE``
      /tdm?reservation=V&policy=URL  a 1 MiB image/jpeg sent slowly with TDMRep's
                               ``tdm-reservation: V`` (and ``tdm-policy: URL`` when given)
      /bomb.png                a 20000 x 20000 PNG of a few tens of KiB
      /busy/{name}?status=S&after=A  S (default 429, with ``Retry-After: A`` when given)
                               while ``busy_left`` > 0 (each such answer counts it down),
                               then a PNG
      /slow/{name}?s=S         a PNG after S seconds (default 0.2); ``peak_in_flight``
                               is the most /slow requests it ever answered at once
      /robots.txt              as `set_robots` says: 404 by default; a body, a status, a
                               delay before answering, or a redirect

    ``requests`` lists the path of every request that reached the server, in order,
    except /robots.txt ones: those are counted in ``robots_requests``, so tests of images
    need not care whether the fetcher read robots.txt first. ``request_times`` holds the
    same as (path, ``time.monotonic()`` at arrival), so tests can tell how long a client
    waited between attempts.
    ``body_bytes_sent[path]`` counts body bytes written by the streaming routes
    (/noai, /tdm, /endless, /big, /chunked), ``completed`` their responses that sent the whole body,
    ``disconnected`` those the client hung up on mid-body.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[str] = []
        self.request_times: list[tuple[str, float]] = []
        self.body_bytes_sent: collections.Counter[str] = collections.Counter()
        self.completed: collections.Counter[str] = collections.Counter()
        self.disconnected: collections.Counter[str] = collections.Counter()
        self._images: dict[str, tuple[bytes, str]] = {}
        self._first_seen: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._png = make_png(0)
        self._bomb: bytes | None = None
        self.robots_requests = 0
        self.busy_left = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._robots_conf: dict = {"body": None, "status": 200, "delay_s": 0.0, "redirect": None}
        self.add_image("redirected", make_photo_jpeg(0, 64, 48))

    # ------------------------------------------------------------------ public API

    def url(self, path: str, host: str | None = None) -> str:
        """Absolute URL of ``path`` on this server (optionally spelled with ``host``)."""
        return f"http://{host or self.host}:{self.port}{path}"

    def add_image(self, name: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Serve ``data`` at /img/{name}; returns that path."""
        with self._lock:
            self._images[name] = (data, content_type)
        return f"/img/{name}"

    def set_robots(self, body: str | bytes | None = None, status: int = 200, delay_s: float = 0.0,
                   redirect: str | None = None) -> None:
        """What /robots.txt answers: ``body`` with ``status`` (None: 404), after
        ``delay_s``; or a 302 to ``redirect``."""
        with self._lock:
            self._robots_conf = {"body": body, "status": status, "delay_s": delay_s, "redirect": redirect}

    def arrivals(self, prefix: str) -> list[float]:
        """Monotonic arrival times of the requests whose path starts with ``prefix``."""
        with self._lock:
            return [t for p, t in self.request_times if p.startswith(prefix)]

    def arrival_times(self, path: str) -> list[float]:
        """Monotonic arrival times of the requests for ``path``, in order."""
        with self._lock:
            return [t for p, t in self.request_times if p == path]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_times.clear()
            self.robots_requests = 0

    def wait_for(self, condition, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
        """Poll ``condition()`` until true or ``timeout_s``; the server notices a client
        hang-up a moment after the client has moved on."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return bool(condition())

    def start(self) -> HostileServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_app())
            except BaseException as exc:  # report start-up failures to the caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="hostile-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._stop_app(), loop)
        future.result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._loop = self._thread = None

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ lifecycle

    async def _start_app(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._log_request])
        app.add_routes(
            [
                web.get("/img/{name}", self._image),
                web.get("/404", self._status(404)),
                web.get("/500", self._status(500)),
                web.get("/flaky/{key}", self._flaky),
                web.get("/429/{key}", self._throttled),
                web.get("/hang", self._hang),
                web.get("/redirect-loop", self._redirect_loop),
                web.get("/redirect-private", self._redirect_private),
                web.get("/redirect-to-loopback", self._redirect_to_loopback),
                web.get("/redirect", self._redirect),
                web.get("/redirect-chain/{n}", self._redirect_chain),
                web.get("/truncated", self._truncated),
                web.get("/html", self._html),
                web.get("/typed", self._typed),
                web.get("/empty", self._empty),
                web.get("/endless", self._endless),
                web.get("/big", self._big),
                web.get("/chunked", self._chunked),
                web.get("/noai", self._noai),
                web.get("/robots", self._robots),
                web.get("/bomb.png", self._bomb_png),
                web.get("/busy/{name}", self._busy),
                web.get("/tdm", self._tdm),
                web.get("/slow/{name}", self._slow),
                web.get("/robots.txt", self._robots_txt),
            ]
        )
        # A short shutdown grace: /hang and /endless must not hold up stop().
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop_app(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()
        await self._runner.cleanup()

    @web.middleware
    async def _log_request(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        arrived = time.monotonic()
        with self._lock:
            if request.path == "/robots.txt":
                self.robots_requests += 1
            else:
                self.requests.append(request.path)
                self.request_times.append((request.path, arrived))
        return await handler(request)

    def _first_time(self, key: str) -> bool:
        with self._lock:
            if key in self._first_seen:
                return False
            self._first_seen.add(key)
            return True

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep; True when the server began stopping meanwhile."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------------------------ routes

    async def _image(self, request: web.Request) -> web.Response:
        with self._lock:
            entry = self._images.get(request.match_info["name"])
        if entry is None:
            raise web.HTTPNotFound()
        data, content_type = entry
        return web.Response(body=data, content_type=content_type)

    @staticmethod
    def _status(code: int):  # type: ignore[no-untyped-def]
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=code, text=f"status {code}")

        return handler

    async def _flaky(self, request: web.Request) -> web.Response:
        if self._first_time("flaky:" + request.match_info["key"]):
            return web.Response(status=500, text="try again")
        return web.Response(body=self._png, content_type="image/png")

    async def _throttled(self, request: web.Request) -> web.Response:
        if self._first_time("429:" + request.match_info["key"]):
            after = request.query.get("after", "1")
            status = int(request.query.get("status", "429"))
            return web.Response(status=status, text="slow down", headers={"Retry-After": after})
        return web.Response(body=self._png, content_type="image/png")

    async def _hang(self, request: web.Request) -> web.Response:
        await self._sleep_unless_stopping(120)
        return web.Response(status=503, text="gave up hanging")

    async def _redirect_loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/redirect-loop")

    async def _redirect_private(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://10.0.0.1/x")

    async def _redirect_to_loopback(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "redirected")
        raise web.HTTPFound(f"http://127.0.0.1:{self.port}/img/{name}")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _redirect_chain(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n <= 0:
            return web.Response(body=self._png, content_type="image/png")
        raise web.HTTPFound(f"/redirect-chain/{n - 1}")

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(b"\xff\xd8\xff" + b"\x00" * 997)
        # Hang up mid-body, as a crashed or cut-off origin would.
        assert request.transport is not None
        request.transport.close()
        raise asyncio.CancelledError()

    async def _html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>not an image</body></html>", content_type="text/html")

    async def _typed(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._png, headers={"Content-Type": request.query.get("type", "image/png")}
        )

    async def _empty(self, request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="image/jpeg")

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, total: int | None,
        pause_s: float,
    ) -> web.StreamResponse:
        """Write a body in chunks until ``total`` bytes, the client leaves, or stop()."""
        path = request.path
        await response.prepare(request)
        chunk = b"\xff\xd8\xff\xe0" + b"\x42" * (CHUNK - 4)
        sent = 0
        try:
            while total is None or sent < total:
                piece = chunk if total is None else chunk[: total - sent]
                await response.write(piece)
                sent += len(piece)
                with self._lock:
                    self.body_bytes_sent[path] += len(piece)
                if await self._sleep_unless_stopping(pause_s):
                    return response
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            with self._lock:
                self.disconnected[path] += 1
            return response  # the client hung up: exactly what the fetcher should do
        with self._lock:
            self.completed[path] += 1
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        return await self._stream(request, response, None, 0.001)

    async def _big(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", str(1 << 20)))
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = size
        return await self._stream(request, response, size, 0)

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", str(1 << 20)))
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        return await self._stream(request, response, size, 0.001)

    async def _noai(self, request: web.Request) -> web.StreamResponse:
        size = 1 << 20
        response = web.StreamResponse(
            headers={"Content-Type": "image/jpeg", "X-Robots-Tag": "noai"}
        )
        response.content_length = size
        # Slow enough that a client which stops after the headers is seen leaving.
        return await self._stream(request, response, size, 0.05)

    async def _robots(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._png,
            headers={"Content-Type": "image/png", "X-Robots-Tag": request.query.get("tag", "")},
        )

    async def _tdm(self, request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "image/jpeg",
                   "tdm-reservation": request.query.get("reservation", "1")}
        if "policy" in request.query:
            headers["tdm-policy"] = request.query["policy"]
        response = web.StreamResponse(headers=headers)
        response.content_length = 1 << 20
        return await self._stream(request, response, 1 << 20, 0.05)

    async def _slow(self, request: web.Request) -> web.Response:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self._sleep_unless_stopping(float(request.query.get("s", "0.2")))
        finally:
            with self._lock:
                self.in_flight -= 1
        return web.Response(body=self._png, content_type="image/png")

    async def _busy(self, request: web.Request) -> web.Response:
        with self._lock:
            busy = self.busy_left > 0
            self.busy_left -= busy
        if busy:
            after = request.query.get("after")
            headers = {"Retry-After": after} if after else {}
            return web.Response(status=int(request.query.get("status", "429")), text="busy",
                                headers=headers)
        return web.Response(body=self._png, content_type="image/png")

    async def _robots_txt(self, request: web.Request) -> web.Response:
        with self._lock:
            robots = dict(self._robots_conf)
        if robots["delay_s"] and await self._sleep_unless_stopping(robots["delay_s"]):
            return web.Response(status=503, text="stopping")
        if robots["redirect"]:
            raise web.HTTPFound(robots["redirect"])
        if robots["body"] is None:
            raise web.HTTPNotFound()
        body = robots["body"].encode() if isinstance(robots["body"], str) else robots["body"]
        return web.Response(status=robots["status"], body=body, content_type="text/plain")

    async def _bomb_png(self, request: web.Request) -> web.Response:
        if self._bomb is None:
            self._bomb = await asyncio.get_running_loop().run_in_executor(None, make_bomb_png)
        return web.Response(body=self._bomb, content_type="image/png")


def main() -> None:
    """Serve until interrupted, printing the base URL (handy for manual checks)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with HostileServer(port=args.port) as server:
        print(server.url("/"), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
