"""HTTP requests of one served ASGI process: answer time and the process's CPU per request.

Starts ``python -m portal.serve`` (the production server of the topology) on a PostgreSQL
database of its own (``--db``, created and migrated) and Redis, creates a user with an API
token and a browser session, and sends ``--requests`` requests one after the other on one
keep-alive connection to each route (after ``--warmup`` unmeasured ones):
``/api/v1/me/`` (token authentication, the API throttle's cache read, one serializer),
``/healthz`` (a database query, a channel-layer round trip, the broker), and the owner's
dashboard page (a session, a template). Prints JSON: p50, p90 and p99 per route and the
server's CPU per request (from /proc).

    .venv/bin/python bench/http_bench.py --requests 300 --json /tmp/http.json

Needs PostgreSQL (user ``postgres``, no password, on 127.0.0.1:5432) and Redis on loopback.
Results: docs/BENCHMARKS.md ("HTTP requests").
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ocpp_bench  # database set-up, server helpers

ROOT = ocpp_bench.ROOT
PY = ocpp_bench.PY


def make_user() -> None:
    """Prints an API token and a session cookie of a new owner of an organization."""
    import django

    django.setup()
    from django.contrib.sessions.backends.db import SessionStore
    from rest_framework.authtoken.models import Token

    from portal.models import Membership, Organization, Role, User

    name = uuid.uuid4().hex[:10]
    user = User.objects.create_user(
        username=f"bench{name}", email=f"{name}@bench.test", password=uuid.uuid4().hex
    )
    org, _ = Organization.objects.get_or_create(slug="http-bench", defaults={"name": "Bench"})
    Membership.objects.create(user=user, organization=org, role=Role.OWNER)
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    print(
        json.dumps({"token": Token.objects.create(user=user).key, "session": session.session_key})
    )


def measure(port: int, path: str, headers: dict[str, str], count: int, warmup: int) -> list:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for i in range(warmup + count):
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}")
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    connection.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--db", default="http_bench")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--portal-log-level", default="WARNING")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--_user", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._user:
        make_user()
        return
    if not 1 <= args.requests <= 5000:
        raise SystemExit("bounded: 1 to 5,000 requests per route")
    env = ocpp_bench.portal_env(args)
    # Every request counts against the API's per-user throttle; not what is measured here.
    env["API_USER_RATE"] = "1000000/hour"
    env["STATIC_ROOT"] = f"/tmp/{args.db}_static"  # pages need the collected static files
    subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", args.db], env=env, capture_output=True
    )
    for command in ("migrate", "collectstatic"):
        subprocess.run(
            [PY, "manage.py", command, "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
    made = subprocess.run(
        [PY, __file__, "--_user"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    user = json.loads(made.stdout.strip().splitlines()[-1])
    server = subprocess.Popen(
        [PY, "-m", "portal.serve", "--port", str(args.port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )
    routes = {
        "/api/v1/me/": {"Authorization": f"Token {user['token']}"},
        "/healthz": {},
        "/o/http-bench/": {"Cookie": f"sessionid={user['session']}"},
    }
    results: dict[str, Any] = {}
    try:
        ocpp_bench.wait_port(args.port, server)
        for path, headers in routes.items():
            measure(args.port, path, headers, 1, args.warmup)
            cpu_before = ocpp_bench.cpu_seconds(server.pid)
            times = measure(args.port, path, headers, args.requests, 0)
            cpu = ocpp_bench.cpu_seconds(server.pid) - cpu_before
            ordered = sorted(times)
            results[path] = {
                "p50_ms": round(statistics.median(ordered), 2),
                "p90_ms": round(ordered[int(len(ordered) * 0.9)], 2),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
                "server_cpu_ms_per_request": round(cpu * 1000 / args.requests, 2),
            }
    finally:
        server.terminate()
        server.wait(15)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": ocpp_bench.cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "command": " ".join([".venv/bin/python", "bench/http_bench.py", *sys.argv[1:]]),
        "routes": results,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
