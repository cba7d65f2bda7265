"""The fetcher's address guard: which URLs and addresses may be fetched at all.

A scraped URL list can point anywhere: at loopback, at the private network the workers
run in, or at a cloud metadata service that hands out credentials. This module decides,
before any byte is sent, whether a URL is well formed (http/https with a host) and
whether the address it leads to is a public one. IP literals are recognised in every
spelling a URL parser or libc accepts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
``[::ffff:127.0.0.1]``, ...); host names are checked after DNS resolution by
`GuardedResolver`, so the connection goes to the very address that was checked.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
import unicodedata
from collections.abc import Iterable
from typing import NamedTuple

import aiohttp.abc
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Cloud instance-metadata endpoints: they hand out credentials to whoever asks. They are
# refused whatever ``allow_private_networks`` says; only an exact ``allowed_hosts``
# entry (the very spelling and port) lets one through.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("169.254.170.23"),  # AWS EKS Pod Identity agent
        ipaddress.ip_address("169.254.0.23"),  # Tencent Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
        ipaddress.ip_address("fd00:ec2::23"),  # AWS EKS Pod Identity agent over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud
    }
)
METADATA_HOSTNAMES = frozenset(
    {
        "metadata.google.internal", "metadata.goog", "metadata", "instance-data",
        "instance-data.ec2.internal", "metadata.tencentyun.com", "metadata.platformequinix.com",
        "metadata.packet.net",
    }
)

_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
_IPV4_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class BlockedAddressError(OSError):
    """A destination the address guard refuses to connect to."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"blocked address {host!r}: {reason}")
        self.host = host
        self.reason = reason


class UrlCheck(NamedTuple):
    """Verdict on one URL: ``ok`` or a record status plus a short reason."""

    ok: bool
    status: str | None
    reason: str | None
    url: URL | None  # the parsed URL to request: the very object that was checked


# --------------------------------------------------------------------------- literals


def _parse_ipv4_part(part: str) -> int | None:
    """One inet_aton component: decimal, 0x-hex or 0-prefixed octal."""
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        if digits == "":
            return 0  # WHATWG URL parsing reads a bare "0x" as zero
        try:
            return int(digits, 16)
        except ValueError:
            return None
    if not part.isascii() or not part.isdigit():
        return None
    if len(part) > 1 and part[0] == "0":
        try:
            return int(part, 8)
        except ValueError:  # 08, 09: not octal, so not an address
            return None
    return int(part)


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton semantics: 1-4 parts, the last one filling the remaining bytes."""
    if host.endswith("."):
        host = host[:-1]
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or any(p == "" for p in parts):
        return None
    values = [_parse_ipv4_part(p) for p in parts]
    if any(v is None for v in values):
        return None
    *head, last = values
    if any(v > 0xFF for v in head):
        return None
    last_bits = 8 * (4 - len(head))
    if last >= 1 << last_bits:
        return None
    number = 0
    for v in head:
        number = (number << 8) | v
    number = (number << last_bits) | last
    return ipaddress.IPv4Address(number)


def parse_host_literal(host: str) -> IPAddress | None:
    """The IP address a host string spells, in any form a URL parser or libc accepts.

    Returns None when ``host`` is a name rather than an address literal.
    """
    if not isinstance(host, str):
        return None
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        # Zone ids ("fe80::1%eth0", URL-encoded as "%25eth0") name an interface,
        # not a different address.
        text = text.split("%", 1)[0]
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _parse_ipv4(text)


# --------------------------------------------------------------------------- addresses


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses an IPv6 address tunnels to (mapped, 6to4, Teredo, NAT64, ...)."""
    embedded: list[tuple[str, ipaddress.IPv4Address]] = []
    if ip.ipv4_mapped is not None:
        embedded.append(("IPv4-mapped", ip.ipv4_mapped))
    if ip.sixtofour is not None:
        embedded.append(("6to4", ip.sixtofour))
    if ip.teredo is not None:
        server, client = ip.teredo
        embedded.append(("Teredo server", server))
        embedded.append(("Teredo client", client))
    if ip in _NAT64_WELL_KNOWN:
        embedded.append(("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are handled as themselves
        embedded.append(("IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return embedded


def metadata_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is a cloud metadata endpoint (or an IPv6 form reaching one), or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        for kind, inner in _embedded_ipv4(ip):
            if inner in METADATA_ADDRESSES:
                return f"{kind} form of {inner}: cloud metadata address"
        if ip in _NAT64_LOCAL_USE:
            # A site's NAT64 may put the IPv4 address at any RFC 6052 offset: one of
            # them can be the metadata address, so the whole prefix stays shut.
            return "local-use NAT64 prefix: may reach a cloud metadata address"
    return None


def is_forbidden_address(ip: IPAddress | str) -> str | None:
    """Why the fetcher must not connect to ``ip``, or None for a public address."""
    if isinstance(ip, str):
        parsed = parse_host_literal(ip)
        if parsed is None:
            return "not an IP address"
        ip = parsed
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])

    reason = metadata_reason(ip)  # first: the same words whichever switch is set
    if reason is not None:
        return reason
    if isinstance(ip, ipaddress.IPv6Address):
        for kind, inner in _embedded_ipv4(ip):
            reason = is_forbidden_address(inner)
            if reason is not None:
                return f"{kind} form of {inner}: {reason}"
        if ip.ipv4_mapped is not None or ip in _NAT64_WELL_KNOWN or (
            ip in _IPV4_COMPATIBLE and int(ip) > 1
        ):
            return None  # these reach exactly the embedded (public) IPv4 address
        if ip in _SITE_LOCAL:
            return "site-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        return "shared address space (carrier-grade NAT)"
    if ip == _IPV4_BROADCAST:
        return "broadcast"
    if ip.is_private:
        return "private network"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


# --------------------------------------------------------------------------- URLs


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".")


# Full stops IDNA maps to "." (ideographic, full-width, half-width ideographic).
_UNICODE_FULL_STOPS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def looks_like_ip_literal(host: str) -> bool:
    """Whether aiohttp would take ``host`` for an IP literal and never resolve it.

    aiohttp (``helpers.is_ip_address``) treats a host made only of digits and dots, or
    one containing ":", as an address and connects without asking any resolver, so
    `GuardedResolver` never sees it. Full-width digits and dots are normalised first,
    as IDNA does.
    """
    text = unicodedata.normalize("NFKC", host).translate(_UNICODE_FULL_STOPS).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return ":" in text or text.replace(".", "").isdigit()


def _parse_exemptions(allowed_hosts: Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """``host`` or ``host:port`` entries (``[v6]:port`` for IPv6) the guard lets through."""
    return _parse_exemption_tuple(tuple(allowed_hosts))


@functools.lru_cache(maxsize=64)
def _parse_exemption_tuple(allowed_hosts: tuple[str, ...]) -> frozenset[tuple[str, int | None]]:
    exempt: set[tuple[str, int | None]] = set()
    for entry in allowed_hosts:
        entry = entry.strip()
        host, port = entry, None
        if entry.startswith("["):
            close = entry.find("]")
            host = entry[1:close]
            rest = entry[close + 1 :]
            port = int(rest[1:]) if rest.startswith(":") else None
        elif entry.count(":") == 1:
            host, port_text = entry.split(":")
            port = int(port_text)
        exempt.add((_host_key(host), port))
    return frozenset(exempt)


def _is_exempt(exempt: frozenset[tuple[str, int | None]], host: str, port: int | None) -> bool:
    key = _host_key(host)
    return (key, port) in exempt or (key, None) in exempt


def check_host(
    host: str,
    port: int | None = None,
    *,
    allow_private_networks: bool = False,
    allowed_hosts: Iterable[str] = (),
) -> str | None:
    """Why the guard refuses ``host`` before any DNS lookup, or None.

    Cloud metadata names and addresses are refused even with ``allow_private_networks``;
    only an exact ``allowed_hosts`` entry opens one. Names that are not literals pass
    here; `GuardedResolver` checks what they resolve to.
    """
    if _is_exempt(_parse_exemptions(allowed_hosts), host, port):
        return None
    if _host_key(host) in METADATA_HOSTNAMES:
        return "cloud metadata host name"
    literal = parse_host_literal(host)
    if literal is None:
        return None
    if allow_private_networks:
        return metadata_reason(literal)
    return is_forbidden_address(literal)


def check_url(
    url: object,
    *,
    allow_private_networks: bool = False,
    allowed_hosts: Iterable[str] = (),
) -> UrlCheck:
    """Whether ``url`` may be requested: ``invalid_url``, ``blocked_address`` or ok.

    ``invalid_url`` covers anything yarl cannot parse, schemes other than http(s), a
    missing host, and hosts that look like IP literals (digits and dots only, or
    containing ":") yet spell no address. Refuses address literals and metadata names
    the guard forbids; with ``allow_private_networks`` only metadata ones (and the form).
    Host names are resolved later, by `GuardedResolver`.
    """
    if isinstance(url, URL):
        url = str(url)  # re-parsed below, so a URL object and its text get one verdict
    if not isinstance(url, str) or not url.strip():
        return UrlCheck(False, "invalid_url", "not a non-empty string", None)
    try:
        parsed = URL(url.strip())
        scheme = parsed.scheme.lower()
        host = parsed.raw_host
        port = parsed.port
    except Exception as exc:  # yarl raises more than ValueError (IndexError on "http://[]@")
        return UrlCheck(False, "invalid_url", f"unparseable: {type(exc).__name__}", None)
    if scheme not in ALLOWED_SCHEMES:
        return UrlCheck(False, "invalid_url", f"scheme {scheme or '(none)'!r} not allowed", None)
    if not host:
        return UrlCheck(False, "invalid_url", "no host", None)
    if any(ch.isspace() or not ch.isprintable() for ch in host):
        return UrlCheck(False, "invalid_url", "host has blank or control characters", None)
    if looks_like_ip_literal(host) and parse_host_literal(host) is None:
        # aiohttp would connect to this "address" without a lookup, so neither the
        # literal check nor the resolver could vouch for where it goes.
        return UrlCheck(False, "invalid_url", "malformed IP address literal", None)
    reason = check_host(
        host, port, allow_private_networks=allow_private_networks, allowed_hosts=allowed_hosts
    )
    if reason is not None:
        return UrlCheck(False, "blocked_address", reason, None)
    return UrlCheck(True, None, None, parsed)


# --------------------------------------------------------------------------- DNS


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses forbidden destinations.

    aiohttp connects to exactly the addresses a resolver returns, so refusing here
    means no connection is ever opened to an address that was not checked, and there is
    no second lookup an attacker's DNS could answer differently. If any one address of
    a name is forbidden the whole name is refused: happy-eyeballs might pick any of them.
    With ``allow_private_networks`` only metadata names and addresses are refused; an
    exact ``allowed_hosts`` entry passes whatever it resolves to. aiohttp does not call
    resolvers for IP literals: `check_url` covers those.
    """

    def __init__(
        self,
        resolver: aiohttp.abc.AbstractResolver | None = None,
        *,
        allow_private_networks: bool = False,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self._resolver = resolver
        self._allow_private = allow_private_networks
        self._exempt = _parse_exemptions(allowed_hosts)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        exempt = _is_exempt(self._exempt, host, port)
        if not exempt and _host_key(host) in METADATA_HOSTNAMES:
            raise BlockedAddressError(host, "cloud metadata host name")
        if self._resolver is None:  # created lazily: it binds to the running loop
            self._resolver = DefaultResolver()
        infos = await self._resolver.resolve(host, port, family)
        if not exempt:
            check = metadata_reason if self._allow_private else is_forbidden_address
            for info in infos:
                address = parse_host_literal(info["host"])
                reason = "resolver returned a non-address" if address is None else check(address)
                if reason is not None:
                    raise BlockedAddressError(host, f"resolves to {info['host']}: {reason}")
        return infos

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
