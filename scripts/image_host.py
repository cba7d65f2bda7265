"""A local image host: serves a directory over HTTP on 127.0.0.1 from a background thread.

The demo and the benchmarks point dataset URLs at it, so an audit runs end to end with no
network. `python scripts/image_host.py DIR` serves DIR in the foreground.
"""
from __future__ import annotations

import argparse
import asyncio
import mimetypes
import threading
from pathlib import Path

from aiohttp import web


class ImageHost:
    """Serve files under `root` at http://127.0.0.1:PORT/<name>; missing files are 404.

    /robots.txt is `robots_txt` (None: 404, so everything may be fetched), whatever is in
    `root`. `requests` counts the other requests, `robots_requests` the robots.txt ones
    (the fetcher reads robots.txt once per host before the first image)."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0,
                 robots_txt: str | None = None):
        self.root = Path(root)
        self.host = host
        self.port = port
        self.robots_txt = robots_txt
        self.requests = 0
        self.robots_requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="image-host")
        self._runner: web.AppRunner | None = None

    async def _robots(self, request: web.Request) -> web.StreamResponse:
        self.robots_requests += 1
        if self.robots_txt is None:
            raise web.HTTPNotFound()
        return web.Response(text=self.robots_txt, content_type="text/plain")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        path = (self.root / request.match_info["name"]).resolve()
        if self.root.resolve() not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        body = await asyncio.to_thread(path.read_bytes)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.Response(body=body, content_type=content_type)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/robots.txt", self._robots)
        app.router.add_get("/{name:.+}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self) -> "ImageHost":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def __enter__(self) -> "ImageHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--robots-txt", help="a file served as /robots.txt (default: 404)")
    args = parser.parse_args()
    robots = Path(args.robots_txt).read_text() if args.robots_txt else None
    with ImageHost(args.root, port=args.port, robots_txt=robots) as host:
        print(f"serving {args.root} at {host.url('')}  (Ctrl-C stops)")
        threading.Event().wait()


if __name__ == "__main__":
    main()
