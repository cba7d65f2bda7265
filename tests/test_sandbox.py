"""The suite's network sandbox: inside it nothing but loopback can be reached, so a test
that meets a broken address guard fails instead of sending a packet off the machine."""
from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests import sandbox

# Run in a fresh interpreter: the test process's own audit hook (tests/conftest.py)
# would refuse these connects first, and this test is about the namespace, not the hook.
_CONNECT_OFF_MACHINE = """
import json, socket, sys, time
out = []
for address in sys.argv[1:]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    started = time.monotonic()
    try:
        s.connect((address, 80))
        code = 0
    except OSError as err:
        code = err.errno
    out.append([address, code, time.monotonic() - started])
    s.close()
print(json.dumps(out))
"""


_PROBE = "import json; from tests import sandbox; print(json.dumps([sandbox.interfaces(), sandbox.routed_off_machine()]))"


def test_the_announced_sandbox_is_the_one_found():
    # scripts/sandbox.sh sets the mode; a namespace that still has a route out must fail.
    # The route probe runs in a fresh interpreter: this process's audit hook would
    # refuse its connect() and make every address look unrouted.
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    interfaces, routed = json.loads(done.stdout)
    if sandbox.MODE in ("netns", "userns"):
        assert interfaces == ["lo"]
        assert routed == []
        assert sandbox.ISOLATED
    else:
        assert sandbox.MODE == "none"
        assert sandbox.ISOLATED == (interfaces == ["lo"] and routed == [])


@pytest.mark.off_machine
def test_a_connection_off_the_machine_fails_at_once():
    done = subprocess.run([sys.executable, "-c", _CONNECT_OFF_MACHINE, *sandbox.OFF_MACHINE],
                          capture_output=True, text=True, timeout=60, check=True)
    for address, code, seconds in json.loads(done.stdout):
        assert code == errno.ENETUNREACH, (address, errno.errorcode.get(code, code))
        assert seconds < 0.5, (address, seconds)


def _echo_once(family: int, host: str) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.bind((host, 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer():
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(16).upper())

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with socket.create_connection((host, port), timeout=5) as client:
            client.sendall(b"ping")
            reply = client.recv(16)
        thread.join(5)
        return reply


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "127.0.0.3"),
                                          (socket.AF_INET6, "::1")])
def test_loopback_still_works(family, host):
    assert _echo_once(family, host) == b"PING"


@pytest.mark.off_machine
def test_the_test_process_refuses_off_machine_connects_itself():
    # The second wall, for runs where no namespace can be made.
    with socket.socket() as s, pytest.raises(OSError, match="tests connect only to loopback"):
        s.connect(("10.0.0.1", 80))


def test_loopback_spellings_are_told_from_other_hosts():
    assert all(sandbox.is_loopback(h) for h in ("127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1",
                                                "localhost", "LOCALHOST."))
    assert not any(sandbox.is_loopback(h) for h in ("10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1",
                                                    "fd00:ec2::254", "example.com", None, b"127.0.0.1"))
