"""The address guard: literal spellings, forbidden ranges, URL form, guarded DNS."""
from __future__ import annotations

import asyncio
import ipaddress
import socket

import aiohttp.abc
import pytest

from transforms.netguard import (
    BlockedAddressError,
    GuardedResolver,
    check_host,
    check_url,
    is_forbidden_address,
    looks_like_ip_literal,
    parse_host_literal,
)

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",  # one decimal number
    "0x7f000001",  # one hex number
    "0X7F000001",
    "0x7f.0.0.1",  # hex part
    "0x7f.1",
    "0177.0.0.1",  # octal part
    "017700000001",  # one octal number
    "127.1",  # short forms
    "127.0.1",
    "127.000.000.001",
    "127.0.0.1.",  # trailing dot
    "127.255.255.254",
    "[::1]",
    "::1",
    "0:0:0:0:0:0:0:1",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "::ffff:7f00:1",
    "[::127.0.0.1]",  # IPv4-compatible (deprecated)
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_loopback_spelling_is_recognised_and_forbidden(host: str) -> None:
    ip = parse_host_literal(host)
    assert ip is not None
    assert is_forbidden_address(ip) is not None
    assert check_host(host) is not None


@pytest.mark.parametrize(
    "host, expected",
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),  # a.b.c: c fills the last 16 bits
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("[fe80::1%25eth0]", "fe80::1"),  # zone id, URL-encoded
        ("fe80::1%eth0", "fe80::1"),
        ("[::FFFF:7F00:1]", "::ffff:7f00:1"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_parse_host_literal_reads_inet_aton_forms(host: str, expected: str) -> None:
    assert parse_host_literal(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "host",
    ["example.com", "localhost", "1.2.3.4.5", "256.0.0.1", "1.2.3.4a", "08.0.0.1",
     "4294967296", "0xfffffffff", "", "[not:an:address]", "1..2.3"],
)
def test_names_and_malformed_numbers_are_not_literals(host: str) -> None:
    assert parse_host_literal(host) is None


@pytest.mark.parametrize(
    "address, words",
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:169.254.169.254", "metadata"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", ""),
        ("255.255.255.255", "broadcast"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:a00:1::", "6to4"),  # 6to4 of 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo"),  # client 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "NAT64"),  # 169.254.169.254 via NAT64
        ("64:ff9b:1::1", "NAT64"),
    ],
)
def test_forbidden_ranges_have_reasons(address: str, words: str) -> None:
    reason = is_forbidden_address(ipaddress.ip_address(address))
    assert reason is not None
    assert words.lower() in reason.lower()


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2001:4860:4860::8888",
     "::ffff:8.8.8.8", "2002:808:808::", "64:ff9b::808:808"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) is None
    assert is_forbidden_address(address) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.jpg",
        "HTTP://127.0.0.1/x.jpg",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.0.1./",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://example.com@127.0.0.1/",  # userinfo: the host is what follows @
        "http://user:pass@127.0.0.1:80/",
        "https://10.0.0.1/",
        "http://10.1/",
        "http://127\u30020\u30020\u30021/",  # ideographic full stops, normalised by IDNA
        "http://\uff11\uff12\uff17.0.0.1/",  # full-width digits
        "http://[fe80::1%25eth0]/",
    ],
)
def test_check_url_blocks_forbidden_literals(url: str) -> None:
    verdict = check_url(url)
    assert not verdict.ok
    assert verdict.status == "blocked_address"
    assert verdict.url is None
    # Turning the guard off lets the same URL through with its form intact.
    assert check_url(url, allow_private_networks=True).ok


# Cloud metadata endpoints in the spellings the guard reads (section "literals" above).
METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/latest/meta-data/",  # one decimal number
    "http://0xa9fea9fe/",  # one hex number
    "http://0251.0376.0251.0376/",  # octal parts
    "http://169.254.43518/",  # short form
    "http://169.254.169.254./",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[FD00:EC2:0:0::254]/",
    "http://169.254.170.2/v2/credentials",
    "http://100.100.100.200/latest/meta-data/",
    "http://192.0.0.192/opc/v2/instance/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41.google.internal/",  # full-width letters
    "http://metadata/computeMetadata/v1/",
    "http://instance-data/latest/",
    "http://user@metadata.goog/",
    "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64 (RFC 8215), /96 form of 169.254.169.254
    "http://[64:ff9b:1:a9fe:a9:fe00::]/",  # the same prefix, RFC 6052 /48 layout
]


@pytest.mark.parametrize("url", METADATA_URLS)
@pytest.mark.parametrize("settings", [{}, {"allow_private_networks": True}],
                         ids=["guarded", "private-networks-allowed"])
def test_metadata_endpoints_are_refused_whatever_the_switch_says(url: str, settings: dict) -> None:
    verdict = check_url(url, **settings)
    assert (verdict.ok, verdict.status, verdict.url) == (False, "blocked_address", None)
    assert "metadata" in verdict.reason


def test_only_an_exact_allowed_hosts_entry_opens_a_metadata_endpoint() -> None:
    url = "http://169.254.169.254:8080/latest/meta-data/"
    for other in (["2852039166"], ["169.254.169.254:80"], ["[::ffff:169.254.169.254]"],
                  ["metadata.google.internal"]):
        assert not check_url(url, allow_private_networks=True, allowed_hosts=other).ok, other
    assert check_url(url, allowed_hosts=["169.254.169.254"]).ok
    assert check_url(url, allowed_hosts=["169.254.169.254:8080"]).ok
    assert check_url("http://metadata.google.internal/", allowed_hosts=["metadata.google.internal"]).ok


@pytest.mark.parametrize(
    "url",
    [None, "", "   ", 123, b"http://example.com/", ["http://example.com/"], "ftp://x",
     "ftp://example.com/a.jpg", "javascript:alert(1)", "data:image/png;base64,AAAA",
     "file:///etc/passwd", "http://", "http:///x.jpg", "not a url", "//example.com/a.jpg",
     "http://exa mple.com/"],
)
def test_check_url_rejects_malformed_urls(url: object) -> None:
    verdict = check_url(url, allow_private_networks=True)
    assert not verdict.ok
    assert verdict.status == "invalid_url"
    assert verdict.reason


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1../",  # two trailing dots: no inet_aton form
        "http://1..2.3/",
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://08.0.0.1/",  # not octal
        "http://4294967296/",  # one number over 32 bits
        "http://[::ffff:127.1]/",  # short IPv4 inside IPv6 is not valid IPv6
        "http://[::ffff:1.2.3.4.5]/",
        "http://[::1::2]/",
        "http://[1:2:3]/",
        "http://\uff11\uff12\uff17.0.0.0.1/",  # full-width digits
        "http://\uff11\uff12\uff17\uff0e0\uff0e0\uff0e0\uff0e1/",  # and full-width dots
    ],
)
def test_check_url_rejects_malformed_ip_literals(url: str) -> None:
    # aiohttp connects to digit-and-dot or colon hosts without asking the resolver, so a
    # literal the guard cannot read must not pass as a name, whatever the guard settings.
    host = url.split("//", 1)[1].split("/", 1)[0]
    for settings in ({}, {"allow_private_networks": True}, {"allowed_hosts": [host]}):
        verdict = check_url(url, **settings)
        assert not verdict.ok, settings
        assert verdict.status == "invalid_url"
        assert "literal" in verdict.reason


@pytest.mark.parametrize(
    "host, looks",
    [("1.2.3.4.5", True), ("127.0.0.1..", True), ("::ffff:127.1", True),
     ("[::1]", True), ("\uff11\uff12\uff17\u30020\u30020\u30021", True), ("4294967296", True),
     ("example.com", False), ("0x7f.1", False), ("1.2.3.4a", False), ("...", False),
     ("localhost", False)],
)
def test_looks_like_ip_literal_follows_aiohttp(host: str, looks: bool) -> None:
    assert looks_like_ip_literal(host) is looks


@pytest.mark.parametrize(
    "url", ["http://[]@", "http://[]@/a.jpg", "http://a@[]@", "http://[", "http://[]:80",
            "http://[::1]x/"],
)
def test_check_url_turns_every_parser_failure_into_invalid_url(url: str) -> None:
    # yarl raises IndexError for some of these, not only ValueError.
    verdict = check_url(url)
    assert (verdict.ok, verdict.status, verdict.url) == (False, "invalid_url", None)
    assert verdict.reason.startswith("unparseable")


@pytest.mark.parametrize(
    "url", ["http://example.com/a.jpg", "https://example.com:8443/a.jpg?x=1",
            "HTTPS://Example.COM/a.jpg", "http://8.8.8.8/a.png", "http://[2606:4700::1111]/a"],
)
def test_check_url_accepts_public_http_urls(url: str) -> None:
    verdict = check_url(url)
    assert verdict.ok and verdict.status is None and verdict.url is not None
    assert verdict.url.scheme in ("http", "https")


def test_exempt_hosts_match_spelling_and_port() -> None:
    exempt = ("127.0.0.1:8080", "mirror.internal")
    assert check_url("http://127.0.0.1:8080/a", allowed_hosts=exempt).ok
    assert not check_url("http://127.0.0.1:9090/a", allowed_hosts=exempt).ok
    assert not check_url("http://127.1:8080/a", allowed_hosts=exempt).ok  # other spelling
    assert check_url("http://MIRROR.internal:1234/a", allowed_hosts=exempt).ok


def _resolve(resolver: GuardedResolver, host: str, port: int = 80) -> list:
    async def run() -> list:
        try:
            return await resolver.resolve(host, port, socket.AF_INET)
        finally:
            await resolver.close()

    return asyncio.run(run())


def test_resolver_refuses_names_that_resolve_to_loopback() -> None:
    # "localhost" is a name, not a literal: only the resolved address gives it away.
    assert check_url("http://localhost/").ok
    with pytest.raises(BlockedAddressError) as info:
        _resolve(GuardedResolver(), "localhost")
    assert "loopback" in info.value.reason
    assert isinstance(info.value, OSError)  # aiohttp wraps OSErrors from resolvers


def test_resolver_refuses_hex_names_that_libc_reads_as_loopback() -> None:
    # aiohttp hands "0x7f.1" to the resolver (not all digits); getaddrinfo reads it as
    # 127.0.0.1. The resolver must catch it even where check_url was skipped.
    with pytest.raises(BlockedAddressError):
        _resolve(GuardedResolver(), "0x7f.1")


@pytest.mark.off_machine
def test_resolver_refuses_metadata_names_without_looking_them_up() -> None:
    with pytest.raises(BlockedAddressError) as info:
        _resolve(GuardedResolver(), "metadata.google.internal")
    assert "metadata" in info.value.reason


def test_resolver_passes_addresses_through_when_allowed() -> None:
    infos = _resolve(GuardedResolver(allow_private_networks=True), "localhost", 8080)
    assert infos and all(info["port"] == 8080 for info in infos)
    assert {info["host"] for info in infos} >= {"127.0.0.1"}
    exempt = _resolve(GuardedResolver(allowed_hosts=["localhost:8080"]), "localhost", 8080)
    assert exempt
    with pytest.raises(BlockedAddressError):
        _resolve(GuardedResolver(allowed_hosts=["localhost:8080"]), "localhost", 9090)


class _FixedAnswers(aiohttp.abc.AbstractResolver):
    """A resolver that answers every name with the given addresses, in order: what a
    hostile DNS server can return for a name it controls."""

    def __init__(self, addresses: list[str]) -> None:
        self._addresses = addresses

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0,
                 "flags": socket.AI_NUMERICHOST} for a in self._addresses]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("addresses", [["93.184.215.14", "10.0.0.1"], ["10.0.0.1", "93.184.215.14"],
                                       ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::1"]])
def test_resolver_refuses_a_name_if_any_of_its_addresses_is_forbidden(addresses) -> None:
    # Happy eyeballs may connect to any answer: one forbidden address spoils the name.
    with pytest.raises(BlockedAddressError) as info:
        _resolve(GuardedResolver(_FixedAnswers(addresses)), "rebinding.example")
    assert info.value.host == "rebinding.example"


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200",
                                     "::ffff:169.254.169.254"])
def test_resolver_refuses_metadata_answers_even_with_private_networks_allowed(address) -> None:
    # A name the attacker controls, answered with a metadata address: refused; a private
    # answer passes with the switch on (that is what the switch is for).
    with pytest.raises(BlockedAddressError) as info:
        _resolve(GuardedResolver(_FixedAnswers([address]), allow_private_networks=True), "rebind.example")
    assert "metadata" in info.value.reason
    assert _resolve(GuardedResolver(_FixedAnswers(["10.0.0.7"]), allow_private_networks=True), "lan.example")
    exempt = GuardedResolver(_FixedAnswers([address]), allowed_hosts=["rebind.example"])
    assert [i["host"] for i in _resolve(exempt, "rebind.example")] == [address]


@pytest.mark.off_machine
@pytest.mark.parametrize("name", ["metadata.google.internal", "METADATA.goog.", "instance-data"])
def test_resolver_refuses_metadata_names_with_private_networks_allowed(name: str) -> None:
    with pytest.raises(BlockedAddressError) as info:
        _resolve(GuardedResolver(allow_private_networks=True), name)
    assert "metadata" in info.value.reason


def test_resolver_returns_every_public_answer() -> None:
    public = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    infos = _resolve(GuardedResolver(_FixedAnswers(public)), "example.com", 443)
    assert [info["host"] for info in infos] == public
