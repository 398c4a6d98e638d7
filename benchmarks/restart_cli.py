"""End-to-end restart through the real CLI: start amqpd on a data directory and time it
until a passive ``queue.declare`` reports the backlog (what benchmarks/restart_backlog.sh
measures, without starting a RabbitMQ node of its own).

Run it on a *copy* of a data directory built by restart_rss.py (the broker writes to the
directory it runs on: a new segment, a CleanShutdown record at the stop):

    cp -r /tmp/restart-bench/m1 /tmp/restart-bench/m1-copy
    python benchmarks/restart_cli.py /tmp/restart-bench/m1-copy --messages 1000000

Prints when the ready line came, when the count was right, the broker's CPU time and peak
RSS (VmHWM) at that moment, and the first message's body and redelivered flag; then stops
the broker with SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import pika


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--queue", default="backlog")
    a = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    command = [sys.executable, "-m", "amqpd", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([*command, "--data-dir", a.data_dir], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            break
    ready = time.perf_counter() - start
    params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    count = ch.queue_declare(a.queue, passive=True, durable=True).method.message_count
    counted = time.perf_counter() - start
    with open(f"/proc/{proc.pid}/stat") as f:
        fields = f.read().split()
    cpu = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{proc.pid}/status") as f:
        hwm = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    method, _, body = ch.basic_get(a.queue, auto_ack=False)
    assert method is not None
    ch.basic_nack(method.delivery_tag, requeue=True)
    conn.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    print(
        f"restart_cli: ready line after {ready:.2f} s; passive queue.declare reported "
        f"{count:,} (expected {a.messages:,}) after {counted:.2f} s; broker CPU {cpu:.2f} s, "
        f"peak RSS {int(hwm) / 1024:.0f} MiB; first body {body[:8]!r} "
        f"redelivered={method.redelivered}; exit {proc.returncode}"
    )


if __name__ == "__main__":
    main()
