"""A real audit made for the report's tests (tests/test_report.py and
tests/test_report_browser.py share it): photos and failures on two loopback hosts (one
with enough failed rows to be named in the report, one with too few), a takedown list
that removes three rows whose URLs, captions and hashes are known (one of them a failed
fetch on a third host of its own), captions with personal data, and every fetched image
scored by a random-weight CLIP model."""
from __future__ import annotations

import glob
import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.cli import main as cli_main
from scripts.sample_images import make_photo_jpeg, make_png
from tests.conftest import laion_table
from tests.hostile_server import HostileServer
from transforms.takedown import TakedownEntry, write_list

SECRET_PHOTO = make_photo_jpeg(4242, 640, 480)
SECRET_CAPTIONS = ("SECRETCAPTION-alpha jane.doe@example.org", "SECRETCAPTION-beta call +44 20 7946 0958",
                   "SECRETCAPTION-gamma taken down, gone")
NAMED_HOST, UNNAMED_HOST, REMOVED_HOST = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def read_rows(output: str) -> list[dict]:
    """Every audit row of a run's audit/ folder."""
    files = sorted(glob.glob(f"{output}/audit/*.parquet"))
    assert files, "no audit files written"
    return [row for f in files for row in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="session")
def report_audit(tmp_path_factory):
    """Runs `laion-audit run` on 28 rows; returns paths and what the test must not see."""
    tmp = tmp_path_factory.mktemp("report-audit")
    with HostileServer(host=NAMED_HOST) as first, HostileServer(host=UNNAMED_HOST) as second, \
            HostileServer(host=REMOVED_HOST) as third:
        urls, captions = [], []
        for i in range(8):
            urls.append(first.url(first.add_image(f"photo{i}.jpg", make_photo_jpeg(100 + i, 320, 240))))
            captions.append(f"photo of a boat {i}")
        urls.append(second.url(second.add_image("pic.png", make_png(5, 200, 150), "image/png")))
        captions.append("a png")
        # The third is a URL taken down that no longer answers (404): a failed, removed
        # row, alone on its host.
        secret_urls = [first.url(first.add_image("secret-one.jpg", SECRET_PHOTO)),
                       second.url(second.add_image("secret-two.jpg", SECRET_PHOTO)),
                       third.url("/img/secret-three.jpg")]
        urls += secret_urls
        captions += list(SECRET_CAPTIONS)
        # NAMED_HOST fails 11 times (named in the report), UNNAMED_HOST twice (summed
        # under "(other hosts)").
        failures = [first.url("/404"), first.url("/404"), first.url("/500"), first.url("/html"),
                    *(first.url(f"/img/gone-{i}.jpg") for i in range(7)),
                    second.url("/404"), second.url("/empty"), None, "not a url", "ftp://files.example/a.jpg"]
        urls += failures
        captions += ["write to bob@example.com", "dead", "dead", "html", *["gone"] * 7, "dead", "empty", "none",
                     "bad", "ftp"]
        dataset = tmp / "rows.parquet"
        pq.write_table(laion_table(urls, captions), dataset, row_group_size=6)

        md5 = hashlib.md5(SECRET_PHOTO).hexdigest()
        sha256 = hashlib.sha256(SECRET_PHOTO).hexdigest()
        lists = tmp / "takedown.csv"
        write_list([TakedownEntry("victims", "v-1", "md5", md5, reason="clinical photo"),
                    TakedownEntry("victims", "v-2", "sha256", sha256),
                    TakedownEntry("urls", "u-1", "url", secret_urls[0]),
                    TakedownEntry("urls", "u-2", "url", secret_urls[2])], str(lists))
        output = tmp / "out"
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump({
            "dataset": {"input": str(dataset)},
            "output": {"path": str(output)},
            "fetch": {"timeout_s": 3, "connect_timeout_s": 2, "retries": 1, "backoff_base_s": 0.05,
                      "allow_private_networks": True},
            "embedding": {"enabled": True, "model": "ViT-B-32", "pretrained": None, "batch_size": 8},
            "takedown": {"lists": [str(lists)]},
            "policy": {"review_if": ["email"]},
            "runner": {"name": "FnApiRunner", "local_group_rows": 10},
        }))
        assert cli_main(["run", str(config), "-q"]) == 0
    return {
        "tmp": tmp, "output": str(output), "config": config, "lists": lists, "dataset": dataset,
        "secret_urls": secret_urls, "secret_captions": list(SECRET_CAPTIONS),
        "secret_values": [md5, sha256],  # the list's values (the list file's own sha256 is shown)
        "rows": len(urls),
    }


def report_html(audit: dict) -> str:
    return Path(audit["output"], "report", "index.html").read_text(encoding="utf-8")
