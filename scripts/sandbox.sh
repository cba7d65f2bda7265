#!/usr/bin/env bash
# Run a command in a network namespace that has nothing but loopback, so that no test
# can send a packet off this machine whatever bug it meets (a broken address guard
# included): inside, 127.0.0.0/8 and [::1] work and every other address fails at once.
#
#   scripts/sandbox.sh CMD [ARG...]
#
# Tries, in order: a plain network namespace (Linux, as root: `unshare -n`), then a user
# namespace with its own network (`unshare -rn`, unprivileged). Where neither can be
# made it runs CMD unsandboxed, and tests that aim at forbidden addresses skip (see
# tests/sandbox.py). LAION_AUDIT_SANDBOX tells the command which way it ran:
# netns | userns | none.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: scripts/sandbox.sh CMD [ARG...]" >&2
    exit 2
fi

# Already inside one (a nested call, e.g. from scripts/mutation_check.py): run as is.
if [ "${LAION_AUDIT_SANDBOX:-}" = netns ] || [ "${LAION_AUDIT_SANDBOX:-}" = userns ]; then
    exec "$@"
fi

# Inside the namespace: bring loopback up (a new namespace starts with lo down) and give
# it one documentation-range address per family (TEST-NET-1, 2001:db8::/32: never routed
# anywhere). Without a non-loopback address getaddrinfo's AI_ADDRCONFIG, which aiohttp
# sets, finds no address for "localhost"; with it, lookups behave as on any host while
# packets to that address still stay on lo and every other address stays unreachable.
inner='ip link set lo up && ip addr add 192.0.2.1/32 dev lo \
    && { ip -6 addr add 2001:db8::1/128 dev lo 2>/dev/null || true; } && exec "$@"'

can() { command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 && "$@" sh -c "$inner" sh true 2>/dev/null; }

if [ "$(id -u)" -eq 0 ] && can unshare -n; then
    echo "sandbox: loopback-only network namespace (unshare -n, as root)" >&2
    LAION_AUDIT_SANDBOX=netns exec unshare -n sh -c "$inner" sh "$@"
elif can unshare -rn; then
    echo "sandbox: loopback-only network namespace (unshare -rn, user namespace)" >&2
    LAION_AUDIT_SANDBOX=userns exec unshare -rn sh -c "$inner" sh "$@"
else
    echo "sandbox: NONE (no network namespace can be made here); tests that aim at" \
         "forbidden addresses will skip" >&2
    LAION_AUDIT_SANDBOX=none exec "$@"
fi
