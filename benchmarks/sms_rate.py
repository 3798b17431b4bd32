"""Benchmark: K sending worker processes against one provider rate R, with the limiter
shared through Redis (sms/shared_rate.py) and, in the same run, without it (each
process throttled on its own by sms.sender.Throttle, as before the shared limiter).

A fake Twilio (campaign.py's: ThreadingHTTPServer, 201 and a message like Twilio's) runs
in this process and notes when each POST arrives. Each worker is a child process that
sends --messages reminder-shaped messages through the official twilio client (the
HTTP client and timeouts of sms/twilio_gateway.py), calling its throttle's ``wait()``
before each, exactly where ``sms.sender.send_due`` does. No database: the figure is the
rate, which the database does not change.

Modes, each a row:
- `shared`: every worker uses ``SharedThrottle(redis, R)`` on one key (the new default
  when a Redis is configured; SMS_RATE_PER_SECOND = R for all workers);
- `own R/K`: each worker ``Throttle(R / K)`` (the old advice: the rate divided by the
  workers);
- `own R`: each worker ``Throttle(R)`` (SMS_RATE_PER_SECOND left at the provider's rate
  with several workers: what the shared limiter prevents).

Columns: `sent`, `seconds` (first to last arrival), `msg/s` achieved, `busiest 1 s`
(the most arrivals in any window [t, t + 1 s) starting at an arrival), `cap` (R) and
`over` (busiest - R when above, else 0), `CPU s` (all workers' user + system CPU).

    .venv/bin/python benchmarks/sms_rate.py [--workers 4] [--rate 20] [--messages 60]
        [--redis redis://127.0.0.1:6379/15]

Exits 0 whatever the figures, non-zero only when a message is lost or refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from campaign import ACCOUNT, CALLBACK, SERVICE, TOKEN, _FakeTwilio

PUBLIC_BASE_URL = "https://dibao.example.cn"


def _child_worker(mode: str, base_url: str, count: int, rate: float, key: str, url: str) -> None:
    import secrets
    from datetime import date

    from twilio.rest import Client

    from sms import templates
    from sms.sender import Throttle
    from sms.shared_rate import SharedThrottle
    from sms.twilio_gateway import TwilioSettings, _HttpClient

    defaults = TwilioSettings(ACCOUNT, TOKEN, SERVICE, None, CALLBACK, base_url)
    client = Client(
        ACCOUNT,
        TOKEN,
        http_client=_HttpClient(base_url, defaults.connect_timeout_s, defaults.read_timeout_s),
    )
    throttle: Throttle | SharedThrottle = (
        SharedThrottle(url, rate, key=key) if mode == "shared" else Throttle(rate)
    )
    bodies = [
        templates.reminder(
            signature="【科尔沁区民政局】",
            name="王小明",
            last_day=date(2027, 1, 24),
            url=f"{PUBLIC_BASE_URL}/m/{secrets.token_urlsafe(18)}",
        )
        for _ in range(count)
    ]
    # A warm client, as in a running worker (the first request imports lazily).
    assert client.messages is not None
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for index, body in enumerate(bodies):
        throttle.wait()
        client.messages.create(
            to=f"139{os.getpid() % 1000:03d}{index:05d}",
            body=body,
            status_callback=CALLBACK,
            messaging_service_sid=SERVICE,
        )


class _TimedTwilio(_FakeTwilio):
    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    def record(self, to: str, body: str) -> None:
        with self.lock:
            self.arrivals.append(time.monotonic())
        super().record(to, body)


@dataclass
class Row:
    mode: str
    sent: int
    seconds: float
    busiest: int
    cpu: float


def busiest_second(arrivals: list[float]) -> int:
    times = sorted(arrivals)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def run_mode(mode: str, args: argparse.Namespace, per_worker: float) -> Row:
    server = _TimedTwilio()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    key = f"dibao:bench:sms-rate:{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                mode,
                base_url,
                str(args.messages),
                str(per_worker),
                key,
                args.redis,
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.workers)
    ]
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise SystemExit(f"a {mode} worker did not start")
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    cpu = 0.0
    for worker in workers:
        _, status, usage = os.wait4(worker.pid, 0)
        worker.returncode = os.waitstatus_to_exitcode(status)
        if worker.returncode != 0:
            raise SystemExit(f"a {mode} worker exited {worker.returncode}")
        cpu += usage.ru_utime + usage.ru_stime
    server.shutdown()
    server.server_close()
    redis.Redis.from_url(args.redis).delete(key)
    stats = server.stats()
    expected = args.workers * args.messages
    if stats["posts"] != expected or stats["distinct"] != expected or stats["refused"]:
        raise SystemExit(f"{mode}: {json.dumps(stats)} for {expected} messages")
    times = sorted(server.arrivals)
    return Row(mode, len(times), times[-1] - times[0], busiest_second(times), cpu)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        mode, base_url, count, rate, key, url = argv[1:]
        _child_worker(mode, base_url, int(count), float(rate), key, url)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--messages", type=int, default=60, help="per worker")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args(argv)
    print(
        f"{args.workers} workers x {args.messages} messages, provider rate {args.rate:g}/s; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{'mode':<9} {'sent':>5} {'seconds':>8} {'msg/s':>7} {'busiest 1 s':>11} {'cap':>5} "
        f"{'over':>5} {'CPU s':>6}"
    )
    for mode, per_worker in (
        ("shared", args.rate),
        ("own R/K", args.rate / args.workers),
        ("own R", args.rate),
    ):
        row = run_mode("shared" if mode == "shared" else "own", args, per_worker)
        over = max(0, row.busiest - int(args.rate))
        print(
            f"{mode:<9} {row.sent:>5} {row.seconds:>8.2f} {row.sent / row.seconds:>7.2f} "
            f"{row.busiest:>11} {args.rate:>5g} {over:>5} {row.cpu:>6.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
