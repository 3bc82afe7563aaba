"""A TEST-ONLY worker runtime: no inference at all. It scripts the behaviours hive must
handle (crash at start, exit after N s, ignore SIGTERM, never healthy, slow start) and
answers `/health`, `/env` (its environment, to check markers) and `/v1/models`.

With `SCRIPTED_WORKER_STAMPS` set to a file path in its environment, it appends a line
"start <t>" when it starts and "exit <t>" when it crashes as asked (`t` is
`time.monotonic()`, one clock for every process on Linux): when spawns really happened,
seen from outside hive."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("serve", "crash", "exit-after", "ignore-term", "never-healthy", "slow-start", "sicken")


#: What `/metrics` answers: llama.cpp's families, with values tests can recognise.
METRICS_PAGE = (
    "# TYPE llamacpp:predicted_tokens_seconds gauge\n"
    "llamacpp:predicted_tokens_seconds 42.5\n"
    "# TYPE llamacpp:requests_processing gauge\n"
    "llamacpp:requests_processing 1\n"
)


def stamp(what: str) -> None:
    path = os.environ.get("SCRIPTED_WORKER_STAMPS")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{what} {time.monotonic()!r}\n")


def main() -> int:
    stamp("start")
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="")
    parser.add_argument("--mode", choices=MODES, default="serve")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--child", default="false", help="also start a child in the group")
    opts = parser.parse_args()
    print(f"scripted worker: mode {opts.mode}, port {opts.port}, pid {os.getpid()}", flush=True)
    if opts.mode == "crash":
        print("scripted worker: crashing at start as asked", file=sys.stderr, flush=True)
        stamp("exit")
        return 3
    if opts.mode == "ignore-term":
        signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
    if opts.mode == "slow-start":
        time.sleep(opts.delay)
    if opts.child == "true":
        # A child in its process group that ignores SIGTERM: when this process exits on
        # SIGTERM, hive must still leave nothing of the group behind.
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable, "-c", code])
    began = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as llama.cpp's server

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                sick = opts.mode == "never-healthy" or (
                    opts.mode == "sicken" and time.monotonic() - began > opts.delay
                )
                self._send(503 if sick else 200, {"status": "sick" if sick else "ok"})
            elif self.path == "/env":
                self._send(200, dict(os.environ))
            elif self.path == "/v1/models":
                self._send(200, {"data": [{"id": opts.model}]})
            elif self.path == "/metrics":  # llama.cpp's names, fixed values
                data = METRICS_PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._send(404, {"error": "not found"})

    server = ThreadingHTTPServer((opts.host, opts.port), Handler)
    server.daemon_threads = True
    if opts.mode == "exit-after":
        threading.Timer(opts.delay, lambda: os._exit(4)).start()
    if opts.mode != "ignore-term":
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"scripted worker: listening on {opts.host}:{opts.port}", flush=True)
    server.serve_forever(poll_interval=0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
