"""Does the suite catch real bugs? Apply named mutations one at a time, run the tests
that should notice, and print caught / survived.

    python scripts/mutation_check.py            # every mutation (about 5 minutes on 2 cores)
    python scripts/mutation_check.py --list     # names, files and tests, nothing run
    python scripts/mutation_check.py --only guard --only fetch/   # names containing these

Each mutation replaces one exact snippet of one source file (it must occur exactly once:
a refactor that moves the code makes the check fail loudly rather than test nothing),
runs its tests with pytest, and restores the file byte for byte, mtime included. A
mutation is caught when pytest fails. Runs inside the loopback-only sandbox
(scripts/sandbox.sh): a mutated address guard must fail a test, not send a packet.
Exit 0 only when every mutation is caught.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GUARD_TESTS = ("tests/test_netguard.py", "tests/test_fetch.py")
FETCH_TESTS = ("tests/test_fetch.py",)
ROBOTS_TESTS = ("tests/test_robots.py",)
HASH_TESTS = ("tests/test_hashing.py", "tests/test_hash_compat.py")
MATCH_TESTS = ("tests/test_takedown.py", "tests/test_hamming_kernel.py")
DECIDE_TESTS = ("tests/test_policy.py", "tests/test_rematch.py")
CAPTION_TESTS = ("tests/test_captions.py", "tests/test_caption_identifiers.py")
ACCOUNTING_TESTS = ("tests/test_accounting.py",)
TAKEDOWN_E2E = ("tests/test_takedown_e2e.py",)


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str  # stage/what-breaks
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


M = Mutation
MUTATIONS: tuple[Mutation, ...] = (
    # ---------------------------------------------------------------- address guard
    M("guard/private-networks-allowed", "transforms/netguard.py",
      'if ip.is_private:\n        return "private network"', 'if False:\n        return "private network"',
      GUARD_TESTS),
    M("guard/loopback-allowed", "transforms/netguard.py",
      'if ip.is_loopback:\n        return "loopback"', 'if False:\n        return "loopback"', GUARD_TESTS),
    M("guard/metadata-names-allowed", "transforms/netguard.py",
      'if _host_key(host) in METADATA_HOSTNAMES:\n        return "cloud metadata host name"',
      'if False:\n        return "cloud metadata host name"', GUARD_TESTS),
    M("guard/ipv4-mapped-not-unwrapped", "transforms/netguard.py",
      'if ip.ipv4_mapped is not None:\n        embedded.append', 'if False:\n        embedded.append',
      GUARD_TESTS),
    M("guard/resolver-checks-first-address-only", "transforms/netguard.py",
      "for info in infos:\n                address", "for info in infos[:1]:\n                address",
      GUARD_TESTS),
    M("guard/malformed-literal-passes", "transforms/netguard.py",
      "if looks_like_ip_literal(host) and parse_host_literal(host) is None:", "if False:", GUARD_TESTS),
    M("guard/other-schemes-allowed", "transforms/netguard.py",
      "if scheme not in ALLOWED_SCHEMES:", 'if scheme not in ALLOWED_SCHEMES | {"ftp", "file"}:',
      GUARD_TESTS),
    M("guard/redirect-hop-not-rechecked", "transforms/fetch/client.py",
      "verdict = check_url(target, **guard)", "verdict = check_url(target, allow_private_networks=True)",
      FETCH_TESTS),
    # ---------------------------------------------------------------- fetch
    M("fetch/retry-after-ignored", "transforms/fetch/client.py",
      "delay = outcome.retry_after", "delay = backoff_delay(retries_used, settings)", FETCH_TESTS),
    M("fetch/long-retry-after-slept-out", "transforms/fetch/client.py",
      "if outcome.retry_after > settings.backoff_max_s:", "if False:", FETCH_TESTS),
    M("fetch/client-errors-retried", "transforms/fetch/client.py",
      "if status == 429 or status >= 500:", "if status == 429 or status >= 400:", FETCH_TESTS),
    M("fetch/one-retry-too-many", "transforms/fetch/client.py",
      "if retries_used >= settings.retries:", "if retries_used > settings.retries:", FETCH_TESTS),
    M("fetch/body-cap-ignored-while-streaming", "transforms/fetch/client.py",
      "if len(body) > settings.max_bytes:", "if len(body) > 64 * settings.max_bytes:", FETCH_TESTS),
    M("fetch/noimageai-ignored", "transforms/fetch/headers.py",
      r'_OPT_OUT_PATTERN = re.compile(r"(?<![\w-])(noai|noimageai)(?![\w-])"',
      r'_OPT_OUT_PATTERN = re.compile(r"(?<![\w-])(noai)(?![\w-])"', FETCH_TESTS),
    # ---------------------------------------------------------------- hashing
    M("hash/phash-above-the-median-flipped", "transforms/hash_resample.py",
      "phash = np.packbits(flat > (middle[31] + middle[32]) / 2).tobytes().hex()",
      "phash = np.packbits(flat < (middle[31] + middle[32]) / 2).tobytes().hex()", HASH_TESTS),
    M("hash/pdq-hex-little-endian", "transforms/hashing.py",
      "packed = np.packbits(bits.astype(bool))", 'packed = np.packbits(bits.astype(bool), bitorder="little")',
      HASH_TESTS),
    M("hash/copy-at-256-px", "transforms/hash_resample.py", "HASH_MAX_SIDE = 512", "HASH_MAX_SIDE = 256", HASH_TESTS),
    M("hash/plane-decoded-too-small", "transforms/hashing.py", "PLANE_MIN_SIDE = 256", "PLANE_MIN_SIDE = 24", HASH_TESTS),
    M("hash/pixel-cap-loosened", "transforms/hashing.py",
      "if stored_w * stored_h > max_pixels:", "if stored_w * stored_h > 4 * max_pixels:", HASH_TESTS),
    M("hash/exif-orientation-ignored", "transforms/hashing.py",
      "if orientation in _ORIENTATION_TRANSPOSES:\n            # Only when there is something to turn",
      "if False:\n            # Only when there is something to turn", HASH_TESTS),
    M("hash/sha256-of-other-bytes", "transforms/hashing.py",
      "hashlib.sha256(data).hexdigest()", "hashlib.sha256(data[1:]).hexdigest()", HASH_TESTS),
    M("hash/pdq-quality-always-full", "transforms/pdq.py",
      "return min(total // 90, 100)", "return 100", HASH_TESTS),
    # ---------------------------------------------------------------- matching
    M("match/threshold-exclusive", "transforms/takedown/hamming.py",
      "keep = dist <= self._thresholds[ids]", "keep = dist < self._thresholds[ids]", MATCH_TESTS),
    M("match/low-quality-rows-matched", "transforms/takedown/kinds.py",
      "if quality is not None and len(positions):\n            # A flat",
      "if False:\n            # A flat", MATCH_TESTS),
    M("match/row-urls-not-normalised", "transforms/takedown/kinds.py",
      "keys[i] = normalize_url(url)", "keys[i] = url", MATCH_TESTS),
    M("match/multi-index-radius-exclusive", "transforms/takedown/hamming_kernel.py",
      "if distance > radius:", "if distance >= radius:", MATCH_TESTS),
    M("match/turned-search-rows-for-entries", "transforms/takedown/hamming.py",
      "        return entries, rows, distances", "        return rows, entries, distances", MATCH_TESTS),
    M("match/radix-build-loses-a-bucket-run", "transforms/takedown/hamming_kernel.py",
      "if i == 0 or keys[i] != keys[i - 1]:", "if i == 0 or keys[i] > keys[i - 1] + 1:", MATCH_TESTS),
    M("match/flat-scan-radius-exclusive", "transforms/takedown/hamming.py",
      "range_search(queries, self.radius + 1)", "range_search(queries, self.radius)", MATCH_TESTS),
    # ---------------------------------------------------------------- decide
    M("decide/takedown-matches-ignored", "transforms/policy.py",
      'reasons = [f"takedown:{list_id}" for list_id in sorted(list_ids)]', "reasons = []", DECIDE_TESTS),
    M("decide/review-becomes-keep", "transforms/policy.py",
      'return "review", review', 'return "keep", review', DECIDE_TESTS),
    # ---------------------------------------------------------------- clean
    M("clean/review-rows-dropped", "transforms/write.py",
      'pc.equal(table.column("action"), "remove")', 'pc.not_equal(table.column("action"), "keep")',
      ACCOUNTING_TESTS + TAKEDOWN_E2E),
    M("clean/removed-rows-kept", "transforms/clean.py",
      "return np.fromiter((row_id in removed for row_id in ids), dtype=bool, count=len(ids))",
      "return np.zeros(len(ids), dtype=bool)", ("tests/test_clean.py",) + TAKEDOWN_E2E),
    M("clean/file-copied-despite-drops", "transforms/clean.py",
      "            if mask.any():\n                scan.close()", "            if False:\n                scan.close()",
      ("tests/test_clean.py", "tests/test_apply_local.py")),
    M("match/exact-digest-by-prefix-only", "transforms/takedown/search.py",
      "same = (self._codes[entry] == codes[query]).all(axis=1)",
      "same = (self._codes[entry][:, :8] == codes[query][:, :8]).all(axis=1)",
      MATCH_TESTS + ("tests/test_list_loading.py",)),
    M("captions/gate-skips-non-latin-captions", "transforms/captions/scanner.py",
      "return (unsure | found) & non_empty, medical", "return found & non_empty, medical",
      ("tests/test_fetch_off_tables.py",)),
    # ---------------------------------------------------------------- write + summary
    M("write/published-list-leaks-the-url", "transforms/records.py",
      'return {"url_sha256": record.get("url_sha256"), "row_key"',
      'return {"url_sha256": record.get("url"), "row_key"', TAKEDOWN_E2E),
    M("summary/bytes-not-counted", "transforms/write.py",
      'acc["bytes_fetched"] = int(pc.sum(table.column("bytes")).as_py() or 0)', 'acc["bytes_fetched"] = 0',
      ("tests/test_rematch.py",) + TAKEDOWN_E2E),
    M("summary/run-always-accounted", "pipelines/audit.py",
      'summary["all_rows_accounted"] = mismatch is None', 'summary["all_rows_accounted"] = True',
      ACCOUNTING_TESTS),
    M("summary/counts-compared-with-at-least", "pipelines/audit.py",
      "if all(value == expected for value in counts.values()):",
      "if all(value >= expected for value in counts.values()):", ACCOUNTING_TESTS),
    M("summary/counts-compared-with-at-most", "pipelines/audit.py",
      "if all(value == expected for value in counts.values()):",
      "if all(value <= expected for value in counts.values()):", ACCOUNTING_TESTS),
    M("summary/rows-in-at-least-audited", "transforms/write.py",
      'rows_in == counts["rows_audited"]', 'rows_in >= counts["rows_audited"]', ACCOUNTING_TESTS),
    M("summary/rows-audited-at-least-in", "transforms/write.py",
      'rows_in == counts["rows_audited"]', 'counts["rows_audited"] >= rows_in', ACCOUNTING_TESTS),
    M("cli/run-exits-0-whatever-the-counts", "pipelines/cli.py",
      'return 0 if run.summary["all_rows_accounted"] else 1', "return 0", ACCOUNTING_TESTS),
    # ---------------------------------------------------------------- politeness
    M("guard/metadata-open-with-private-networks", "transforms/netguard.py",
      "    if allow_private_networks:\n        return metadata_reason(literal)",
      "    if allow_private_networks:\n        return None", GUARD_TESTS),
    M("robots/disallow-ignored", "transforms/fetch/client.py",
      "if verdict == DISALLOWED:", "if False:", ROBOTS_TESTS),
    M("robots/unreachable-means-allow", "transforms/fetch/robots.py",
      "if status == 429 or status >= 500:", "if False:", ROBOTS_TESTS),
    M("optout/tdm-reservation-ignored", "transforms/fetch/headers.py",
      'return any(value.strip() == "1" for value in values)', "return False", FETCH_TESTS),
    M("pace/429-does-not-slow-the-host", "transforms/fetch/host_limits.py",
      "slower = max(MIN_RPS, current / 2)", "slower = current", ("tests/test_host_limits.py",)),
    # ---------------------------------------------------------------- resume
    M("resume/edited-inputs-not-noticed", "pipelines/local_driver.py",
      'if identities is not None and recorded.get("inputs") != _inputs_of(group, identities):',
      "if False:", ("tests/test_resume.py::test_a_file_edited_in_place_is_audited_again",)),
    # ---------------------------------------------------------------- caption identifiers
    M("captions/cpf-unchecked", "transforms/captions/identifiers.py",
      '"cpf": ("national_id", cpf.is_valid, NON_DIGITS, 0),', '"cpf": ("national_id", lambda _value: True, NON_DIGITS, 0),',
      CAPTION_TESTS),
    M("captions/advertised-ssn-accepted", "transforms/captions/identifiers.py",
      '"ssn": ("national_id", ssn.is_valid, NON_DIGITS, 0),', '"ssn": ("national_id", lambda _value: True, NON_DIGITS, 0),',
      CAPTION_TESTS),
    M("captions/iban-unchecked", "transforms/captions/identifiers.py",
      '"iban": ("iban", _iban_valid, _KEEP_AS_WRITTEN, 2),', '"iban": ("iban", lambda _value: True, _KEEP_AS_WRITTEN, 2),',
      CAPTION_TESTS),
    M("captions/card-luhn-unchecked", "transforms/captions/identifiers.py",
      "return luhn.is_valid(digits)", "return True", CAPTION_TESTS),
    M("captions/card-issuer-ranges-unchecked", "transforms/captions/identifiers.py",
      "if low <= int(digits[:width]) <= high and len(digits) in lengths:",
      "if len(digits) in lengths:", CAPTION_TESTS),
    M("captions/repeated-digits-accepted", "transforms/captions/identifiers.py",
      "return len(set(candidate)) > 1 and valid(candidate)", "return valid(candidate)", CAPTION_TESTS),
)


def check_targets(mutations) -> list[str]:
    """Each mutation's snippet must be in its file exactly once."""
    problems = []
    for m in mutations:
        path = ROOT / m.path
        count = path.read_text(encoding="utf-8").count(m.old) if path.exists() else -1
        if count != 1:
            found = "file missing" if count < 0 else f"found {count} times"
            problems.append(f"{m.name}: snippet not unique in {m.path} ({found}); update MUTATIONS")
        missing = [t for t in m.tests if not (ROOT / t.split("::", 1)[0]).exists()]
        if missing:
            problems.append(f"{m.name}: no such test file {missing[0]}")
    return problems


def run_one(m: Mutation, timeout_s: float) -> tuple[str, float, str]:
    """Apply `m`, run its tests, restore. Returns (caught | survived | error, seconds, detail)."""
    path = ROOT / m.path
    original = path.read_bytes()
    stat = path.stat()
    # This tree's modules first, in Beam's worker processes too (an editable install may
    # point elsewhere, e.g. when the check runs on a snapshot worktree).
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    try:
        path.write_bytes(original.replace(m.old.encode(), m.new.encode(), 1))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return "caught", time.monotonic() - started, f"tests hung past {timeout_s:.0f} s"
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the cached bytecode stays valid
    seconds = time.monotonic() - started
    last = (done.stdout.strip().splitlines() or [""])[-1]
    failed = next((line for line in done.stdout.splitlines() if line.startswith("FAILED")), None)
    if done.returncode == 1 and failed:
        return "caught", seconds, failed[:150]
    if done.returncode == 0:
        return "survived", seconds, last
    # Errors only (the mutant does not import, a fixture breaks), 2: interrupted, 5: no
    # tests collected, 3/4: internal or usage error: the mutation itself is broken, and
    # says nothing of the tests.
    return "error", seconds, f"pytest exit {done.returncode}: {last}"[:150]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutation's test run")
    args = parser.parse_args(argv)

    chosen = [m for m in MUTATIONS if not args.only or any(s in m.name for s in args.only)]
    problems = check_targets(chosen)
    if problems:
        for problem in problems:
            print(f"mutation_check: {problem}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:48} {m.path:24} {' '.join(m.tests)}")
        return 0
    if os.environ.get("LAION_AUDIT_SANDBOX") not in ("netns", "userns"):
        # Mutated guards must meet a namespace with nothing but loopback.
        sandbox = ROOT / "scripts" / "sandbox.sh"
        os.execv(sandbox, [str(sandbox), sys.executable, __file__, *(argv or sys.argv[1:])])

    results = []
    print(f"{'mutation':48} {'result':9} {'s':>6}  detail", flush=True)
    for m in chosen:
        outcome, seconds, detail = run_one(m, args.timeout)
        results.append((m, outcome))
        print(f"{m.name:48} {outcome:9} {seconds:6.1f}  {detail}", flush=True)
    caught = sum(1 for _, o in results if o == "caught")
    survived = [m.name for m, o in results if o == "survived"]
    errors = [m.name for m, o in results if o == "error"]
    print(f"\n{len(results)} mutations: {caught} caught, {len(survived)} survived, {len(errors)} errors")
    for name in survived:
        print(f"  survived: {name}")
    return 0 if not survived and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
