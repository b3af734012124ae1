"""The whole pipeline under sustained load: the highest rate at which every lag stays bounded.

Every stage runs at once on this machine against the secured local stack (``auditseal dev up``), on the
stack's real topics and bucket: the producer (its own process, emitting synthetic events at an offered
rate), the sealer of ``audit.raw``, the sink, the access auditor, the sealer of its ``audit.access`` and the
detector. The offered rate ramps through
``--rates``, each step held for ``--step-seconds`` (600 by default: start-up and batching never dominate).

Measured, every ``--sample-seconds``:
- the rate emitted (the producer's acknowledged count) and sealed (the sealer's own counter);
- lags: the sealer's ``auditseal_sealer_consumer_lag`` (raw records behind the last committed checkpoint,
  summed over chains), the sink's ``auditseal_sink_lag_records`` (summed), the detector's event lag (s);
- CPU (share of one core) and RSS of every component and of the broker, the S3 server and the witness;
- latencies of one event in ``--sample-every`` (1 in 100 by default; their ids carry a marker the reader
  finds with one byte search): emit -> sealed is from the event's ``occurred_at`` to when a read_committed
  consumer of ``audit.sealed`` receives it (its committed seal); emit -> locked is from ``occurred_at`` to
  when this bench has read back the COMPLIANCE lock of the archive object that holds it (a HEAD of the object,
  polled every ``--archive-poll-seconds``, which bounds how late that read-back can be).

A step is *sustained* when the producer kept up with the offered rate (>= 98%), the sealer sealed what was
emitted (>= 98%), and no lag grows: over the step's second half, the least-squares slope of the sealer's and
the sink's lag is under 1% of the offered rate, and the detector's event lag stays under 30 s. Every step
runs (a step past the limit shows how the pipeline degrades). Printed: a line per sample, a table per step, the highest sustained rate; written to ``--out``: ``samples.jsonl``, ``steps.json`` and
``pipeline.png`` (rate, lags, latencies, CPU and RSS over time).

    python -m bench.pipeline                                   # 10k..60k events/s, 10 min a step
    python -m bench.pipeline --rates 20000,40000 --step-seconds 120
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import KafkaSettings, S3Settings
from pipeline.dev.stack import LocalStack
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import EVENT_KIND, KIND_HEADER, sealed_codecs
from pipeline.wire.topics import ACCESS_TOPIC, SEALED_TOPIC, sealed_topic_of

REPO = Path(__file__).resolve().parent.parent
# sampled events' ids start with this (a valid UUID prefix no uuid4 can have: its version nibble is 0)
SAMPLE_PREFIX = "5eed0000-0000-0000"
_SAMPLE_BYTES = SAMPLE_PREFIX.encode()
SUSTAINED_SLOPE = 0.01  # lag growth per second, as a share of the offered rate
DETECTOR_LAG_LIMIT_S = 30.0
# lags at which the pipeline counts as drained before the first step: the sink holds up to an object's
# worth of records per partition until it closes (``--max-age-ms``)
DRAINED_SEALER_LAG = 1_000
DRAINED_SINK_LAG = 200_000


# -- the producer, in its own process ------------------------------------------------------------

def producer_main(rates: list[int], step_seconds: float, sample_every: int, report_every: float) -> int:
    """Emit at each rate for ``step_seconds``; print ``{"t", "emitted", "acked", "rate"}`` lines."""
    from pipeline.producer.client import AuditProducer
    from pipeline.producer.synthetic import synthetic_events

    pool = list(synthetic_events(50_000, seed=7))
    acked = 0

    def delivered(result) -> None:
        nonlocal acked
        if result.error is None:
            acked += 1

    emitted = 0
    tick = 0.005  # emit in slices of 5 ms: a steady offered rate, not bursts
    with AuditProducer() as producer:
        emit = producer.emit
        for rate in rates:
            started = time.monotonic()
            next_report = started
            sent_in_step = 0
            while (now := time.monotonic()) - started < step_seconds:
                # at most 50 ms worth per pass: a producer that falls behind keeps reporting what it achieves
                # (a step it cannot feed is then not sustained) instead of vanishing into one huge pass
                due = min(int((now - started) * rate) - sent_in_step, max(1, rate // 20))
                for _ in range(due):
                    event = dict(pool[emitted % len(pool)])
                    if emitted % sample_every == 0:
                        event["event_id"] = f"{SAMPLE_PREFIX}-{emitted >> 48 & 0xFFFF:04x}-{emitted & 0xFFFFFFFFFFFF:012x}"
                    else:
                        event["event_id"] = f"{os.getpid():08x}-{emitted >> 32 & 0xFFFF:04x}-4{emitted >> 20 & 0xFFF:03x}-" \
                                            f"8{emitted >> 8 & 0xFFF:03x}-{emitted & 0xFFFFFFFFFFFF:012x}"
                    event["occurred_at"] = time.time_ns() // 1000
                    emit(event, on_delivery=delivered)
                    emitted += 1
                sent_in_step += due
                if now >= next_report:
                    print(json.dumps({"t": time.time(), "emitted": emitted, "acked": acked, "rate": rate}), flush=True)
                    next_report += report_every
                time.sleep(max(0.0, tick - (time.monotonic() - now)))
        producer.flush(120)
    print(json.dumps({"t": time.time(), "emitted": emitted, "acked": acked, "rate": 0, "done": True}), flush=True)
    return 0


# -- measuring -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(port: int) -> dict[str, float]:
    """Sum of each sample name's values at a Prometheus endpoint ({} if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


@dataclass
class Component:
    name: str
    process: psutil.Process
    popen: subprocess.Popen | None = None
    metrics_port: int | None = None
    cpu_seconds: float = 0.0


@dataclass
class Latencies:
    """Samples found on the sealed topic, then in the archive."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sealed: list[tuple[float, float]] = field(default_factory=list)  # (when sealed, seconds since occurred_at)
    locked: list[tuple[float, float]] = field(default_factory=list)  # (when locked, seconds since occurred_at)
    # per sealed partition, (sealed offset, occurred_at) of samples not yet seen locked
    waiting: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # a measuring thread that died: the run is void


def _measuring(target, found: Latencies):
    """Run a measuring thread's ``target``; if it dies, say why and let the sampler end the run."""
    def run(*args) -> None:
        try:
            target(*args)
        except Exception as exc:  # reported by the sampler, which stops the run on it
            with found.lock:
                found.failures.append(f"{target.__name__}: {type(exc).__name__}: {exc}")
    return run


def read_sealed(stack: LocalStack, stop: threading.Event, found: Latencies, ready: threading.Event) -> None:
    """Find sampled events as they are committed to ``audit.sealed`` (read_committed, from the end)."""
    consumer = Consumer(KafkaSettings.from_env(stack.env("verifier")).client_config(**{
        "group.id": f"auditseal-verifier-bench-pipeline-{os.getpid()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.wait.max.ms": 50}))
    partitions = consumer.list_topics(SEALED_TOPIC, timeout=30).topics[SEALED_TOPIC].partitions
    consumer.assign([TopicPartition(SEALED_TOPIC, p, -1) for p in partitions])  # -1: the end
    codecs, events = sealed_codecs(), default_codec()
    ready.set()
    try:
        while not stop.is_set():
            for message in consumer.consume(2000, 0.2):
                value = message.value()
                if message.error() or value is None or _SAMPLE_BYTES not in value:
                    continue
                if dict(message.headers() or ()).get(KIND_HEADER) != EVENT_KIND:
                    continue
                now = time.time()
                event = events.decode(codecs.event.decode(value)["event"])
                occurred = event["occurred_at"].timestamp()  # the codec gives timestamp-micros as datetime
                with found.lock:
                    found.sealed.append((now, now - occurred))
                    found.waiting.setdefault(message.partition(), []).append((message.offset(), occurred))
    finally:
        consumer.close()


def watch_archive(stack: LocalStack, stop: threading.Event, found: Latencies, poll: float) -> None:
    """Read back the lock of each new archive object, and time the samples it holds."""
    settings = S3Settings.from_env(stack.env("verifier"))
    s3 = settings.client()
    after: dict[str, str] = {}  # partition prefix -> last key seen
    while not stop.wait(poll):
        with found.lock:
            partitions = sorted(found.waiting)
        for partition in partitions:
            prefix = f"{SEALED_TOPIC}/{partition:03d}/"
            listing = s3.list_objects_v2(Bucket=settings.bucket, Prefix=prefix, StartAfter=after.get(prefix, prefix))
            for item in listing.get("Contents", []):
                key = item["Key"]
                after[prefix] = key
                if key.endswith(".manifest.json"):
                    continue
                head = s3.head_object(Bucket=settings.bucket, Key=key)
                if head.get("ObjectLockMode") != "COMPLIANCE":
                    continue  # never counted as locked
                now = time.time()
                name = key.rsplit("/", 1)[1].split(".", 1)[0]
                first, last = (int(part) for part in name.split("-"))
                with found.lock:
                    kept = []
                    for offset, occurred in found.waiting.get(partition, []):
                        if first <= offset <= last:
                            found.locked.append((now, now - occurred))
                        else:
                            kept.append((offset, occurred))
                    found.waiting[partition] = kept


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / den if den else 0.0


# -- running the pipeline ------------------------------------------------------------------------

def _start(stack: LocalStack, role: str, argv: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, **stack.env(role))
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", *argv], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _infrastructure(stack: LocalStack) -> list[Component]:
    found = []
    for name, managed in (("kafka", stack.kafka_process), ("s3", stack.s3_process), ("witness", stack.witness_process)):
        pid = managed.pid()
        if pid is not None:
            try:
                found.append(Component(name, psutil.Process(pid)))
            except psutil.NoSuchProcess:
                pass
    return found


def run(args: argparse.Namespace) -> int:
    stack = LocalStack()
    out = Path(args.out or stack.root / "bench" / f"pipeline-{datetime.datetime.now():%Y%m%dT%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    components: list[Component] = []
    stop = threading.Event()
    found = Latencies()
    started_here: list[subprocess.Popen] = []
    try:
        for name, role, argv in (
            ("sealer", "sealer", ["seal"]),
            # the access auditor's events travel on audit.access, sealed by a sealer of their own
            ("sealer-access", "sealer", ["seal", "--raw-topic", ACCESS_TOPIC, "--sealed-topic",
                                           sealed_topic_of(ACCESS_TOPIC), "--app-id", "auditseal-sealer-access"]),
            ("sink", "sink", ["sink", "--max-age-ms", str(args.sink_max_age_ms)]),
            ("detector", "detector", ["detect"]),
        ):
            port = _free_port()
            popen = _start(stack, role, [*argv, "--metrics-port", str(port)], out / f"{name}.log")
            started_here.append(popen)
            components.append(Component(name, psutil.Process(popen.pid), popen, port))
        auditor = _start(stack, "access-auditor", ["access-audit", "--start-at-end"], out / "access-auditor.log")
        started_here.append(auditor)
        components.append(Component("access-auditor", psutil.Process(auditor.pid), auditor))
        components += _infrastructure(stack)
        print(f"pipeline bench: {', '.join(c.name for c in components)}; output in {out}", flush=True)
        time.sleep(args.warmup_seconds)  # join groups, open chains
        _drain(args, components, out)

        ready = threading.Event()
        threads = [threading.Thread(target=_measuring(read_sealed, found), args=(stack, stop, found, ready),
                                    daemon=True),
                   threading.Thread(target=_measuring(watch_archive, found),
                                    args=(stack, stop, found, args.archive_poll_seconds), daemon=True)]
        threads[0].start()
        ready.wait(60)
        threads[1].start()
        producer = subprocess.Popen(
            [sys.executable, "-m", "bench.pipeline", "--producer-child", "--rates", args.rates,
             "--step-seconds", str(args.step_seconds), "--sample-every", str(args.sample_every)],
            env=dict(os.environ, **stack.env("producer")), cwd=REPO, stdout=subprocess.PIPE,
            stderr=open(out / "producer.log", "ab"), text=True, start_new_session=True)
        started_here.append(producer)
        components.insert(0, Component("producer", psutil.Process(producer.pid), producer))
        bench_self = Component("bench (measuring)", psutil.Process())
        progress = {"emitted": 0, "acked": 0, "rate": 0}

        def follow_producer() -> None:
            for line in producer.stdout:
                progress.update(json.loads(line))

        threading.Thread(target=follow_producer, daemon=True).start()
        samples = _sample(args, components + [bench_self], producer, progress, found, out)
    finally:
        stop.set()
        for popen in reversed(started_here):
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGTERM)
        for popen in started_here:
            try:
                popen.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
    return _report(args, samples, found, out)


def _check_alive(components: list[Component], out: Path, when: str) -> None:
    for component in components:
        if component.popen is not None and component.popen.poll() is not None:
            raise SystemExit(f"{component.name} exited {when} ({component.popen.returncode}); "
                             f"see {out / (component.name + '.log')}")


def _drain(args, components: list[Component], out: Path) -> None:
    """Wait until what earlier runs left in ``audit.raw`` is sealed and archived: a step must measure
    the offered rate, not a backlog (``--drain-timeout``; the figures say how long it took)."""
    ports = {c.name: c.metrics_port for c in components if c.metrics_port}
    started = time.monotonic()
    next_note = started
    while True:
        _check_alive(components, out, "while draining the backlog")
        sealer = _scrape(ports["sealer"]).get("auditseal_sealer_consumer_lag")
        sink = _scrape(ports["sink"]).get("auditseal_sink_lag_records")
        detector = _scrape(ports["detector"]).get("auditseal_detector_event_lag_seconds")
        if (sealer is not None and sink is not None and sealer <= DRAINED_SEALER_LAG and sink <= DRAINED_SINK_LAG
                and detector is not None and detector < DETECTOR_LAG_LIMIT_S):
            print(f"backlog drained in {time.monotonic() - started:,.0f} s", flush=True)
            return
        if time.monotonic() - started > args.drain_timeout:
            raise SystemExit(f"the backlog did not drain within {args.drain_timeout:.0f} s (sealer lag {sealer}, sink "
                             f"lag {sink}, detector lag {detector} s); start from a fresh stack (auditseal dev down --purge, dev up)")
        if time.monotonic() >= next_note:
            print(f"draining the backlog: sealer lag {sealer}, sink lag {sink}, detector lag {detector} s", flush=True)
            next_note += 30
        time.sleep(5)


def _sample(args, components: list[Component], producer: subprocess.Popen, progress: dict, found: Latencies,
            out: Path) -> list[dict]:
    samples = []
    for component in components:
        component.cpu_seconds = sum(component.process.cpu_times()[:2])
    last_t, last_acked, last_sealed = time.time(), 0, None
    with open(out / "samples.jsonl", "w") as log:
        while producer.poll() is None or progress.get("done") is None:
            time.sleep(args.sample_seconds)
            now = time.time()
            sample: dict = {"t": now, "offered": progress["rate"], "cpu": {}, "rss_mb": {}}
            for component in components:
                try:
                    cpu = sum(component.process.cpu_times()[:2])
                    sample["cpu"][component.name] = (cpu - component.cpu_seconds) / (now - last_t)
                    sample["rss_mb"][component.name] = component.process.memory_info().rss / 2**20
                    component.cpu_seconds = cpu
                except psutil.NoSuchProcess:
                    sample["cpu"][component.name] = sample["rss_mb"][component.name] = None
            metrics = {c.name: _scrape(c.metrics_port) for c in components if c.metrics_port}
            sealed_total = metrics.get("sealer", {}).get("auditseal_sealer_events_sealed_total")
            sample["emit_rate"] = (progress["acked"] - last_acked) / (now - last_t)
            sample["seal_rate"] = (None if sealed_total is None or last_sealed is None
                                   else (sealed_total - last_sealed) / (now - last_t))
            sample["sealer_lag"] = metrics.get("sealer", {}).get("auditseal_sealer_consumer_lag")
            sample["sink_lag"] = metrics.get("sink", {}).get("auditseal_sink_lag_records")
            sample["detector_lag_s"] = metrics.get("detector", {}).get("auditseal_detector_event_lag_seconds")
            with found.lock:
                recent_sealed = [v for t, v in found.sealed if t > last_t]
                recent_locked = [v for t, v in found.locked if t > last_t]
            sample["sealed_p99_s"] = _percentile(recent_sealed, 0.99)
            sample["locked_p99_s"] = _percentile(recent_locked, 0.99)
            _check_alive([c for c in components if c.popen is not producer], out, "during the run")
            if found.failures:
                raise SystemExit(f"a measuring thread failed, the run is void: {found.failures[0]}")
            last_t, last_acked, last_sealed = now, progress["acked"], sealed_total
            samples.append(sample)
            log.write(json.dumps(sample) + "\n")
            log.flush()
            print(f"{datetime.datetime.fromtimestamp(now):%H:%M:%S} offered {sample['offered']:>6,} "
                  f"emitted {sample['emit_rate']:>8,.0f}/s sealed {sample['seal_rate'] or 0:>8,.0f}/s "
                  f"lag sealer {sample['sealer_lag'] or 0:>7,.0f} sink {sample['sink_lag'] or 0:>7,.0f} "
                  f"detector {sample['detector_lag_s'] or 0:>5.1f}s  p99 sealed {_ms(sample['sealed_p99_s'])} "
                  f"locked {_ms(sample['locked_p99_s'])}", flush=True)
    # the archive read-back of the last samples
    time.sleep(max(5.0, 2 * args.sink_max_age_ms / 1000))
    return samples


def _ms(seconds: float | None) -> str:
    return "     -" if seconds is None else f"{seconds * 1000:>6,.0f}ms"


def _report(args, samples: list[dict], found: Latencies, out: Path) -> int:
    rates = [int(r) for r in args.rates.split(",")]
    steps = []
    for rate in rates:
        in_step = [s for s in samples if s["offered"] == rate]
        if not in_step:
            continue
        start, end = in_step[0]["t"] - args.sample_seconds, in_step[-1]["t"]
        second_half = [s for s in in_step if s["t"] >= (start + end) / 2]
        emitted = statistics.fmean(s["emit_rate"] for s in second_half)
        sealed = statistics.fmean(s["seal_rate"] or 0 for s in second_half)
        slopes = {name: _slope([(s["t"], s[name]) for s in second_half if s[name] is not None])
                  for name in ("sealer_lag", "sink_lag")}
        detector_lag = max((s["detector_lag_s"] or 0 for s in second_half), default=0)
        with found.lock:
            sealed_lat = [v for t, v in found.sealed if start <= t <= end]
            locked_lat = [v for t, v in found.locked if start <= t <= end + args.sink_max_age_ms / 1000 + 5]
        cpu = {name: statistics.fmean(s["cpu"][name] for s in in_step if s["cpu"].get(name) is not None)
               for name in in_step[0]["cpu"]}
        rss = {name: (in_step[0]["rss_mb"][name], in_step[-1]["rss_mb"][name]) for name in in_step[0]["rss_mb"]}
        sustained = (emitted >= 0.98 * rate and sealed >= 0.98 * emitted
                     and all(slope < SUSTAINED_SLOPE * rate for slope in slopes.values())
                     and detector_lag < DETECTOR_LAG_LIMIT_S)
        steps.append({
            "offered": rate, "seconds": end - start, "emitted_per_s": emitted, "sealed_per_s": sealed,
            "lag_slope_per_s": slopes, "detector_lag_max_s": detector_lag, "sustained": sustained,
            "emit_to_sealed_s": {"p50": _percentile(sealed_lat, 0.5), "p99": _percentile(sealed_lat, 0.99),
                                 "samples": len(sealed_lat)},
            "emit_to_locked_s": {"p50": _percentile(locked_lat, 0.5), "p99": _percentile(locked_lat, 0.99),
                                 "samples": len(locked_lat)},
            "cpu_cores": cpu, "rss_mb_first_last": rss,
        })
    (out / "steps.json").write_text(json.dumps(steps, indent=2))
    print("\noffered  emitted/s  sealed/s  lag slope sealer/sink (/s)  emit->sealed p50/p99  emit->locked p50/p99  "
          "sustained")
    for step in steps:
        s, lk = step["emit_to_sealed_s"], step["emit_to_locked_s"]
        print(f"{step['offered']:>7,} {step['emitted_per_s']:>10,.0f} {step['sealed_per_s']:>9,.0f} "
              f"{step['lag_slope_per_s']['sealer_lag']:>12,.1f} / {step['lag_slope_per_s']['sink_lag']:<12,.1f} "
              f"{_ms(s['p50'])} / {_ms(s['p99'])}   {_ms(lk['p50'])} / {_ms(lk['p99'])}   "
              f"{'yes' if step['sustained'] else 'NO'}")
    for step in steps:
        print(f"  {step['offered']:,}/s CPU (cores): " + ", ".join(
            f"{name} {value:.2f}" for name, value in step["cpu_cores"].items()) + "; RSS MB first->last: " + ", ".join(
            f"{name} {a:.0f}->{b:.0f}" for name, (a, b) in step["rss_mb_first_last"].items() if a and b))
    best = max((step["offered"] for step in steps if step["sustained"]), default=None)
    print(f"\nhighest sustained rate: {best:,} events/s" if best else "\nno step was sustained")
    print(f"emit->locked target: p99 within --max-age-ms + 5 s = {args.sink_max_age_ms / 1000 + 5:.1f} s")
    _plot(samples, out / "pipeline.png")
    print(f"samples: {out / 'samples.jsonl'}; steps: {out / 'steps.json'}; plot: {out / 'pipeline.png'}")
    return 0


def _plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = samples[0]["t"]
    minutes = [(s["t"] - t0) / 60 for s in samples]
    figure, axes = plt.subplots(5, 1, figsize=(11, 15), sharex=True)
    axes[0].plot(minutes, [s["offered"] for s in samples], label="offered")
    axes[0].plot(minutes, [s["emit_rate"] for s in samples], label="emitted")
    axes[0].plot(minutes, [s["seal_rate"] or 0 for s in samples], label="sealed")
    axes[0].set_ylabel("events/s")
    axes[1].plot(minutes, [s["sealer_lag"] or 0 for s in samples], label="sealer lag (records)")
    axes[1].plot(minutes, [s["sink_lag"] or 0 for s in samples], label="sink lag (records)")
    axes[1].set_ylabel("records")
    axes[2].plot(minutes, [s["sealed_p99_s"] for s in samples], label="emit->sealed p99")
    axes[2].plot(minutes, [s["locked_p99_s"] for s in samples], label="emit->locked p99")
    axes[2].plot(minutes, [s["detector_lag_s"] for s in samples], label="detector event lag")
    axes[2].set_ylabel("seconds")
    for name in samples[0]["cpu"]:
        axes[3].plot(minutes, [s["cpu"].get(name) for s in samples], label=name)
        axes[4].plot(minutes, [s["rss_mb"].get(name) for s in samples], label=name)
    axes[3].set_ylabel("CPU (cores)")
    axes[4].set_ylabel("RSS (MB)")
    axes[4].set_xlabel("minutes")
    for axis in axes:
        axis.legend(fontsize=7, loc="upper left")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="10000,20000,30000,40000,50000,60000",
                        help="offered events/s of each step, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=600)
    parser.add_argument("--warmup-seconds", type=float, default=30)
    parser.add_argument("--drain-timeout", type=float, default=3600,
                        help="seconds to wait for an earlier backlog to be sealed and archived")
    parser.add_argument("--sample-seconds", type=float, default=5)
    parser.add_argument("--sample-every", type=int, default=100, help="time one event in this many")
    parser.add_argument("--sink-max-age-ms", type=int, default=2000)
    parser.add_argument("--archive-poll-seconds", type=float, default=0.5)
    parser.add_argument("--out", help="folder for samples, steps and the plot (default .stack/bench/pipeline-<time>)")
    parser.add_argument("--producer-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # a SIGTERM (timeout, Ctrl-C from a supervisor) unwinds through run()'s finally: no stage left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.producer_child:
        return producer_main([int(r) for r in args.rates.split(",")], args.step_seconds, args.sample_every, 1.0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
