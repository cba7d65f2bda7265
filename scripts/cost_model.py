"""What a full LAION-5B audit costs on Dataflow, from measured per-row CPU costs and
Dataflow's list prices. Each input is a flag whose default is the last measured figure;
the help text names the script that measures it, so the table can be redone from
fresh measurements.

    python scripts/cost_model.py [--fetch-hash-core-ms 7.00] [--classify-core-ms X] ...

Prices: Dataflow batch workers, us-central1, on-demand list prices (Google Cloud's
Dataflow pricing page): $0.056 per vCPU-hour, $0.003557 per GB-hour of memory, $0.000054
per GB-hour of standard persistent disk. Committed-use and FlexRS discounts are not
applied; network egress is not counted (fetching is ingress, which is free, but through
Cloud NAT each GB processed is billed: the table shows that line separately).
"""
from __future__ import annotations

import argparse
import sys

LAION_5B_ROWS = 5_850_000_000

VCPU_HOUR = 0.056
GB_HOUR = 0.003557
PD_GB_HOUR = 0.000054
NAT_PER_GB = 0.045  # Cloud NAT data processing, per GB


def job(rows: float, core_ms: float, gb_per_vcpu: float, vcpus_per_worker: int, disk_gb: int) -> dict:
    vcpu_hours = rows * core_ms / 3_600_000
    worker_hours = vcpu_hours / vcpus_per_worker
    dollars = (vcpu_hours * VCPU_HOUR + vcpu_hours * gb_per_vcpu * GB_HOUR
               + worker_hours * disk_gb * PD_GB_HOUR)
    return {"vcpu_hours": vcpu_hours, "dollars": dollars}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=float, default=LAION_5B_ROWS)
    parser.add_argument("--fetch-hash-core-ms", type=float, default=7.00,
                        help="core-ms per row of fetch + decode + MD5/SHA-256 + pHash + PDQ + match + audit "
                             "table: `python scripts/bench.py --rows 12000`, contender (b), one process")
    parser.add_argument("--mean-image-kb", type=float, default=142.0,
                        help="mean image size the fetch figure was measured with (bench.py's corpus)")
    parser.add_argument("--classify-core-ms", type=float, default=0.35,
                        help="core-ms per row of configs/laion5b-embeddings.yaml (published embeddings, "
                             "zero-shot classification, caption flags, decide, outputs): "
                             "`python scripts/bench_classify.py --rows 20000` (slope between 20k and 40k rows)")
    parser.add_argument("--rematch-core-ms", type=float, default=0.06,
                        help="core-ms per row of rematch against a 1 M-entry PDQ list: PDQ search "
                             "`python scripts/bench_match.py --index-only` at 1M entries (0.050-0.056; a "
                             "list that long is searched the usual way) + the rematch pipeline around "
                             "its search, `python scripts/bench_rematch.py` (0.005 per row beyond start-up "
                             "at 100k entries, between 1M and 3M rows, of which 0.003 is the search)")
    args = parser.parse_args(argv)

    rows = args.rows
    lines = [
        ("fetch + hash (n1-standard-4: 3.75 GB/vCPU, 250 GB disk)",
         job(rows, args.fetch_hash_core_ms, 3.75, 4, 250), args.fetch_hash_core_ms),
        ("classify from published embeddings (n2-highmem-8: 8 GB/vCPU, 250 GB disk)",
         job(rows, args.classify_core_ms, 8.0, 8, 250), args.classify_core_ms),
        ("rematch against a 1 M-entry list (n1-standard-4, 250 GB disk)",
         job(rows, args.rematch_core_ms, 3.75, 4, 250), args.rematch_core_ms),
    ]
    print(f"{rows:,.0f} rows; Dataflow batch list prices, us-central1\n")
    print("| job | core-ms/row | vCPU-hours | $ (vCPU + memory + disk) |")
    print("|---|---|---|---|")
    for name, cost, core_ms in lines:
        print(f"| {name} | {core_ms:g} | {cost['vcpu_hours']:,.0f} | {cost['dollars']:,.0f} |")
    terabytes = rows * args.mean_image_kb / 1e9
    print(f"\nfetched bytes at {args.mean_image_kb:g} KB per image: {terabytes:,.0f} TB; through Cloud NAT "
          f"that adds ${terabytes * 1000 * NAT_PER_GB:,.0f} (workers with public IPs avoid it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
