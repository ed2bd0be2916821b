"""A small closed-loop load generator: C client threads with keep-alive
http.client connections work through a list of requests and time each one."""
from __future__ import annotations

import http.client
import queue
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from bench.server import percentile


@dataclass
class Request:
    label: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict | None = None


@dataclass
class Result:
    label: str
    status: int  # 0 when the connection failed
    seconds: float


def run_load(base_url: str, requests: list[Request], clients: int,
             timeout: float = 30) -> tuple[list[Result], float]:
    """Send every request once from `clients` threads; returns results and wall time."""
    target = urlparse(base_url)
    work: queue.SimpleQueue = queue.SimpleQueue()
    for req in requests:
        work.put(req)
    results: list[Result] = []
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout)
        mine = []
        while True:
            try:
                req = work.get_nowait()
            except queue.Empty:
                break
            started = time.perf_counter()
            try:
                conn.request(req.method, req.path, body=req.body, headers=req.headers or {})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            mine.append(Result(req.label, status, time.perf_counter() - started))
        conn.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def summarise(results: list[Result], wall_seconds: float) -> dict:
    """Requests per second, p50/p99 latency (ms) and status counts."""
    latencies = sorted(r.seconds * 1000 for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    return {"requests": len(results), "rps": round(len(results) / wall_seconds, 1),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "statuses": statuses}
