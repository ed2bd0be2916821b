"""Run Tiffin (or any WSGI app) under a real gunicorn on 127.0.0.1 for browser
tests, storms and benchmarks: a free port, a prepared database, readiness wait.

Shared by bench/*.py and tests/e2e so every run serves the app the same way.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
READY_TIMEOUT_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(database_url: str, *, secret_key: str, webhook_secret: str, **extra: str) -> dict:
    """The environment a Tiffin process needs to serve the test gateway."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "RAZORPAY_"))}
    env.update({
        "TIFFIN_ENV": "development", "DATABASE_URL": database_url, "SECRET_KEY": secret_key,
        "TEST_GATEWAY_ENABLED": "1", "TEST_GATEWAY_WEBHOOK_SECRET": webhook_secret,
        "FLASK_APP": "wsgi", "PYTHONPATH": str(ROOT), "REDIS_URL": "",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def prepare_database(env: dict, *, reset: bool = False) -> None:
    """Migrate (`flask db upgrade`) and seed (`flask seed`); with reset, drop
    everything first (PostgreSQL: the public schema; SQLite: the file)."""
    url = env["DATABASE_URL"]
    if reset:
        if url.startswith("postgresql"):
            import sqlalchemy as sa

            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
            engine.dispose()
        elif url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).unlink(missing_ok=True)
    for args in (["db", "upgrade"], ["seed"]):
        done = subprocess.run([PYTHON, "-m", "flask", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


class Gunicorn:
    """One gunicorn process serving `app_spec` on 127.0.0.1:<free port>."""

    def __init__(self, env: dict, *, app_spec: str = "wsgi:app", workers: int = 2,
                 threads: int = 1, port: int | None = None, ready_path: str = "/",
                 log_path: str | None = None):
        self.env, self.app_spec, self.workers, self.threads = env, app_spec, workers, threads
        self.port = port or free_port()
        self.ready_path = ready_path
        self.log_path = log_path or tempfile.mkstemp(prefix="tiffin-gunicorn-", suffix=".log")[1]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Gunicorn":
        log = open(self.log_path, "ab")
        cmd = [PYTHON, "-m", "gunicorn", self.app_spec, "--bind", f"127.0.0.1:{self.port}",
               "--workers", str(self.workers), "--threads", str(self.threads),
               "--worker-class", "gthread" if self.threads > 1 else "sync",
               "--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning"]
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
                    if resp.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn not ready after {READY_TIMEOUT_SECONDS}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> "Gunicorn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]
