"""How a body is read: whole when its length bounds it, capped as it streams otherwise."""
from __future__ import annotations

import http.server
import threading
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

from scripts.sample_images import make_photo_jpeg
from tests.test_fetch import LOCAL
from transforms.fetch import fetch_batch


class _GzipBombHandler(http.server.BaseHTTPRequestHandler):
    """A small photo followed by ``pad`` zero bytes, sent gzip-compressed (/gzip: a small
    Content-Length that inflates to all of it) or as it is (/plain), with its length."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        import gzip

        query = parse_qs(urlsplit(self.path).query)
        raw = make_photo_jpeg(3, 64, 48) + b"\0" * int(query.get("pad", ["0"])[0])
        body = gzip.compress(raw) if "gzip" in self.path else raw
        if self.path == "/robots.txt":
            self.send_response(404)
            body = b""
        else:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
        if "gzip" in self.path:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_compressed_body_is_capped_by_what_it_inflates_to() -> None:
    # A declared length under the cap bounds what is sent, not what gzip makes of it: the
    # whole-body read is only for bodies sent as they are.
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GzipBombHandler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{httpd.server_address[1]}"
            settings = replace(LOCAL, max_bytes=200_000)
            bomb, small, plain = fetch_batch([f"{base}/gzip?pad=5000000", f"{base}/gzip?pad=10",
                                              f"{base}/plain?pad=10"], settings)
        finally:
            httpd.shutdown()
            thread.join(timeout=10)
    assert bomb.status == "too_large" and bomb.body is None
    assert bomb.error == "body over 200000 bytes"
    want = make_photo_jpeg(3, 64, 48) + b"\0" * 10
    assert small.status == "ok" and small.body == want  # inflated, as the server meant it
    assert plain.status == "ok" and plain.body == want and isinstance(plain.body, bytes)
