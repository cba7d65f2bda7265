"""End to end: a LAION-style parquet whose URLs point at a misbehaving local host goes
through the whole audit pipeline on Beam's real local runners."""
from __future__ import annotations

import glob
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.audit import run_audit
from pipelines.config import parse_config
from scripts.sample_images import make_photo_jpeg, make_png
from tests.conftest import laion_table
from tests.hostile_server import HostileServer
from transforms.records import AUDIT_COLUMNS, STATUSES

PHOTO = make_photo_jpeg(11, 640, 480)
TRUNCATED = make_photo_jpeg(12, 640, 480)[:5000]


@pytest.fixture(scope="module")
def server():
    with HostileServer() as srv:
        srv.add_image("photo.jpg", PHOTO)
        srv.add_image("photo.png", make_png(3, 300, 200), "image/png")
        srv.add_image("cut.jpg", TRUNCATED)
        srv.add_image("text.jpg", b"this is not an image at all\n" * 20)
        yield srv


def hostile_rows(server: HostileServer) -> list[tuple[str | None, str]]:
    """(url, expected status) for every kind of trouble the audit must survive."""
    return [
        (server.url("/img/photo.jpg"), "ok"),
        (server.url("/img/photo.png"), "ok"),
        (server.url("/flaky/e2e"), "ok"),
        (server.url("/429/e2e"), "ok"),
        (server.url("/redirect-chain/2"), "ok"),
        (server.url("/404"), "http_error"),
        (server.url("/500"), "http_error"),
        (server.url("/redirect-loop"), "http_error"),
        (server.url("/hang"), "timeout"),
        (server.url("/truncated"), "connection_error"),
        (server.url("/html"), "not_image"),
        (server.url("/empty"), "not_image"),
        (server.url("/img/text.jpg"), "not_image"),
        (server.url("/img/cut.jpg"), "decode_error"),
        (server.url("/bomb.png"), "too_large"),
        (server.url("/endless"), "too_large"),
        (server.url("/noai"), "opted_out"),
        (None, "invalid_url"),
        ("", "invalid_url"),
        ("not a url", "invalid_url"),
        ("ftp://files.example/a.jpg", "invalid_url"),
        ("javascript:alert(1)", "invalid_url"),
    ]


def audit_config(tmp_path: Path, dataset: str, runner: dict, **fetch) -> object:
    return parse_config(
        {
            "dataset": {"input": dataset},
            "output": {"path": str(tmp_path / "out")},
            "fetch": {
                "timeout_s": 2,
                "connect_timeout_s": 2,
                "retries": 2,
                "backoff_base_s": 0.05,
                "max_bytes": 2 * 1024 * 1024,
                "allowed_private_hosts": ["127.0.0.1"],
                **fetch,
            },
            "runner": runner,
        }
    )


def read_audit(output: str) -> list[dict]:
    files = sorted(glob.glob(f"{output}/audit/*.parquet"))
    assert files, "no audit files written"
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def write_dataset(tmp_path: Path, rows) -> str:
    path = tmp_path / "rows.parquet"
    pq.write_table(laion_table([url for url, _ in rows]), path, row_group_size=5)
    return str(path)


def check_audit(config, rows, run) -> dict[str, dict]:
    audit = read_audit(config.output.path)
    assert len(audit) == len(rows) == run.rows_in == run.rows_audited
    by_id = {r["row_id"]: r for r in audit}
    assert len(by_id) == len(rows)
    for position, (url, expected) in enumerate(rows):
        row = by_id[f"rows.parquet:{position}"]
        assert row["url"] == url
        assert row["status"] == expected, (url, row["status"], row["error"])
        assert row["status"] in STATUSES
    summary = run.summary
    assert summary["rows_in"] == summary["rows_audited"] == len(rows)
    assert summary["all_rows_accounted"] is True
    assert sum(summary["status"].values()) == len(rows)
    return by_id


def test_hostile_host_every_row_one_status(tmp_path, server):
    rows = hostile_rows(server)
    config = audit_config(tmp_path, write_dataset(tmp_path, rows), {"name": "FnApiRunner"})
    run = run_audit(config)
    by_id = check_audit(config, rows, run)

    photo = by_id["rows.parquet:0"]
    assert set(photo) == set(AUDIT_COLUMNS)
    assert (photo["width"], photo["height"], photo["mime"], photo["bytes"]) == (640, 480, "image/jpeg", len(PHOTO))
    assert len(photo["pdq"]) == 64 and len(photo["phash"]) == 16 and photo["pdq_quality"] >= 50
    assert photo["http_status"] == 200 and photo["action"] == "keep"
    assert by_id["rows.parquet:5"]["http_status"] == 404
    assert by_id["rows.parquet:16"]["opt_out"] == ["noai"]
    # The noai body is sent slowly: the fetcher hung up after the headers.
    assert server.completed["/noai"] == 0
    # A decode failure still carries the content hashes (exact-hash lists can match it).
    assert by_id["rows.parquet:13"]["content_sha256"] is not None

    assert Path(config.output.path, "report", "summary.json").is_file()
    # Image bytes never reach the outputs: no 256-byte slice of the photo in any file.
    needle = PHOTO[2000:2256]
    for path in Path(config.output.path).rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path


@pytest.mark.off_machine
def test_address_guard_on_no_request_reaches_the_host(tmp_path, server):
    server.clear_requests()
    port = server.port
    rows = [
        (server.url("/img/photo.jpg"), "blocked_address"),
        (f"http://localhost:{port}/img/photo.jpg", "blocked_address"),
        (f"http://2130706433:{port}/img/photo.jpg", "blocked_address"),
        (f"http://0x7f.0.0.1:{port}/img/photo.jpg", "blocked_address"),
        (f"http://127.1:{port}/img/photo.jpg", "blocked_address"),
        (f"http://[::ffff:127.0.0.1]:{port}/img/photo.jpg", "blocked_address"),
        (f"http://127.0.0.1.:{port}/img/photo.jpg", "blocked_address"),
        ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
        ("http://10.0.0.1/x.jpg", "blocked_address"),
    ]
    config = audit_config(
        tmp_path, write_dataset(tmp_path, rows), {"name": "FnApiRunner"}, allowed_private_hosts=[]
    )
    run = run_audit(config)
    check_audit(config, rows, run)
    assert server.requests == []


@pytest.mark.parametrize(
    "runner",
    [
        pytest.param(
            {"name": "DirectRunner", "options": {"direct_running_mode": "multi_processing", "direct_num_workers": 2}},
            id="multi-process",
        ),
        pytest.param(
            {"name": "PortableRunner", "options": {"job_endpoint": "embed", "environment_type": "LOOPBACK"}},
            id="portable-loopback",
        ),
    ],
)
def test_same_audit_on_other_runners(tmp_path, server, runner):
    rows = [r for r in hostile_rows(server) if r[1] != "timeout"]  # keep these runs short
    config = audit_config(tmp_path, write_dataset(tmp_path, rows), runner)
    run = run_audit(config)
    by_id = check_audit(config, rows, run)

    # Deterministic: the same inputs on the in-memory runner give the same rows.
    reference = audit_config(tmp_path / "ref", config.dataset.input[0], {"name": "FnApiRunner"})
    run_audit(reference)
    ref = {r["row_id"]: r for r in read_audit(reference.output.path)}
    stable = ["status", "url_sha256", "content_md5", "content_sha256", "pdq", "phash", "width", "height"]
    for row_id, row in by_id.items():
        assert {k: row[k] for k in stable} == {k: ref[row_id][k] for k in stable}
