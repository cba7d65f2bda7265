"""Is this test process inside the loopback-only network sandbox (scripts/sandbox.sh)?

Found out by looking, not by trusting the environment: the namespace must have no
interface but `lo`, and the kernel must find no route to an address off this machine.
Asking for a route is a UDP `connect()`, which sends nothing: it only looks the route up.
"""
from __future__ import annotations

import ipaddress
import os
import socket

# Addresses the suite aims at expecting the guard to refuse, and public ones; on an
# ordinary machine they are routed, and some answer. (scripts/sandbox.sh puts 192.0.2.1
# and 2001:db8::1 on lo itself, so they are not here.)
OFF_MACHINE = ("10.0.0.1", "169.254.169.254", "100.100.100.200", "198.51.100.1", "8.8.8.8",
               "fd00:ec2::254", "2606:4700:4700::1111")

MODE = os.environ.get("LAION_AUDIT_SANDBOX", "none")


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def routed(address: str) -> bool:
    """True if the kernel has a route to `address` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
        except OSError:
            return False
    return True


def routed_off_machine() -> list[str]:
    return [address for address in OFF_MACHINE if routed(address)]


def is_isolated() -> bool:
    return interfaces() == ["lo"] and not routed_off_machine()


# Found at import, before tests/conftest.py installs its audit hook (which refuses the
# probe's connect() and would make every address look unrouted).
ISOLATED = is_isolated()


def describe() -> str:
    if ISOLATED:
        return f"loopback-only network namespace ({MODE})"
    return (f"NONE ({MODE}; interfaces {', '.join(interfaces())}): tests that aim at "
            "non-loopback addresses are skipped")


def is_loopback(host: object) -> bool:
    """A connect target that stays on this machine: a loopback literal or `localhost`."""
    if not isinstance(host, str):
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
