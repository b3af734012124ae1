"""How many partitions, workers and cores for N events/s, and what verification costs as the archive grows.

Fed by measurement, not by guesses: the per-event CPU of every stage comes from a ``bench/pipeline.py`` run
(its ``steps.json``: each component's cores at the highest sustained step, divided by the rate it sealed),
and the verifier's records/s per core from ``bench/verify.py`` (``--verify-rate``). What is assumed, and
printed as such:

- a Python worker (sealer, sink, detector, access auditor) uses at most one core (the GIL), planned at
  ``--utilisation`` (0.7) of it so a worker can catch up after a restart;
- a partition (one chain) carries at most ``--partition-rate`` events/s: one chain is sealed by one worker
  at a time, in order, so it is bounded by one core's sealing rate;
- the brokers write every event ``--replication`` (3) times; a broker's budget is ``--broker-mb-s`` (MB/s
  of replicated writes) and its CPU per event is the measured broker CPU;
- the verifier re-reads what is new each day (incremental verification) or the whole archive (full).

    python -m bench.sizing --steps .stack/bench/pipeline-<time>/steps.json --verify-rate 230000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

WORKERS = ("sealer", "sink", "detector", "access-auditor")
SECONDS_A_DAY = 86_400


def per_event_costs(steps: list[dict]) -> tuple[dict[str, float], dict]:
    """Core-seconds per event of every component at the highest sustained step, and that step."""
    sustained = [step for step in steps if step["sustained"]]
    if not sustained:
        raise SystemExit("no step of that run was sustained: there is no measured operating point to scale from")
    step = max(sustained, key=lambda s: s["offered"])
    rate = step["sealed_per_s"]
    return {name: cores / rate for name, cores in step["cpu_cores"].items() if cores is not None}, step


def plan(rate: float, costs: dict[str, float], args: argparse.Namespace) -> dict:
    """Partitions, workers and cores for ``rate`` events/s."""
    workers = {name: max(1, math.ceil(rate * costs[name] / args.utilisation)) for name in WORKERS if name in costs}
    partitions = max(workers.get("sealer", 1), math.ceil(rate / args.partition_rate))
    partitions = max(partitions, 6)
    mb_s = rate * args.event_bytes / 1e6 * args.replication
    brokers = max(3, math.ceil(mb_s / args.broker_mb_s))
    if "access-auditor" in workers:  # it tails one broker's logs: at least one per broker
        workers["access-auditor"] = max(workers["access-auditor"], brokers)
    broker_cores = rate * costs.get("kafka", 0.0) * args.replication / args.utilisation
    # the measured broker CPU is for one copy (the dev stack's single node): each replica costs it again
    others = sum(rate * cost for name, cost in costs.items() if name not in ("kafka", "bench (measuring)"))
    return {"rate": rate, "partitions": partitions, "workers": workers, "brokers": brokers,
            "broker_cores": broker_cores, "replicated_mb_s": mb_s, "cores": others / args.utilisation + broker_cores}


def verification(rate: float, args: argparse.Namespace) -> dict:
    """Core-hours of a daily full verification after 1, 3 and 7 years, and of a daily incremental one."""
    per_day = rate * SECONDS_A_DAY
    full = {years: per_day * 365 * years / args.verify_rate / 3600 for years in (1, 3, 7)}
    return {"records_a_day": per_day, "incremental_core_hours": per_day / args.verify_rate / 3600,
            "full_core_hours_after_years": full}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", required=True, type=Path, help="steps.json of a bench/pipeline.py run")
    parser.add_argument("--verify-rate", type=float, required=True,
                        help="verify --dir records/s on one core, as bench/verify.py printed it")
    parser.add_argument("--rates", default="10000,100000,1000000")
    parser.add_argument("--utilisation", type=float, default=0.7)
    parser.add_argument("--partition-rate", type=float, default=20_000)
    parser.add_argument("--event-bytes", type=float, default=300, help="a raw event's size on the wire")
    parser.add_argument("--replication", type=int, default=3)
    parser.add_argument("--broker-mb-s", type=float, default=100)
    args = parser.parse_args(argv)
    try:
        steps = json.loads(args.steps.read_text())
    except (OSError, ValueError) as exc:
        print(f"sizing: cannot read {args.steps}: {exc}", file=sys.stderr)
        return 2
    costs, step = per_event_costs(steps)
    print(f"measured at {step['sealed_per_s']:,.0f} events/s sealed (the highest sustained step of {args.steps}):")
    print("  " + ", ".join(f"{name} {cost * 1e6:.1f} us/event" for name, cost in costs.items()))
    print(f"assumed: a worker <= 1 core at {args.utilisation:.0%}, a partition <= {args.partition_rate:,.0f} events/s, "
          f"{args.event_bytes:.0f} B/event, replication {args.replication}, {args.broker_mb_s:.0f} MB/s a broker; "
          f"verification {args.verify_rate:,.0f} records/s a core")
    print(f"\n{'events/s':>10} {'partitions':>10} {'sealers':>8} {'sinks':>6} {'detectors':>9} {'auditors':>8} "
          f"{'brokers':>7} {'cores':>7}  verify daily: incremental / full after 1, 3, 7 years (core-hours)")
    for rate in (float(r) for r in args.rates.split(",")):
        sized, verified = plan(rate, costs, args), verification(rate, args)
        workers = sized["workers"]
        full = verified["full_core_hours_after_years"]
        print(f"{rate:>10,.0f} {sized['partitions']:>10} {workers.get('sealer', 0):>8} {workers.get('sink', 0):>6} "
              f"{workers.get('detector', 0):>9} {workers.get('access-auditor', 0):>8} {sized['brokers']:>7} "
              f"{sized['cores']:>7.1f}  {verified['incremental_core_hours']:.2f} / "
              f"{full[1]:,.0f}, {full[3]:,.0f}, {full[7]:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
