"""A stand-in for `vllm serve`: a real HTTP server that streams fake completions, or fails the way a server does.

Run as ``fake_server.py --behaviour B MODEL --port N [vllm serve flags]``; the driver appends the model and flags.
Behaviours: ok (serves), exit-early (logs a startup error and exits 1), hang (never answers, ignores SIGINT and
SIGTERM, and keeps a child process). It writes its pid and its child's to $FAKE_SERVER_PIDS, one a line, and each
profiler call to $FAKE_SERVER_CALLS.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_DELAY_S = 0.002


def note(variable: str, line: str) -> None:
    if os.environ.get(variable):
        with open(os.environ[variable], "a") as handle:
            handle.write(line + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the log short
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, json.dumps({"data": [{"id": "fake", "root": "fake"}]}).encode())
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path in ("/start_profile", "/stop_profile"):
            note("FAKE_SERVER_CALLS", self.path)
            self._send(200, b"{}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        tokens = int(body["max_tokens"])
        for i in range(tokens):
            time.sleep(TOKEN_DELAY_S)
            chunk = {"choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        usage = {"choices": [], "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": tokens}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--behaviour", default="ok")
    parser.add_argument("--port", type=int, required=True)
    args, rest = parser.parse_known_args()
    note("FAKE_SERVER_PIDS", str(os.getpid()))
    print(f"fake server: {' '.join(rest)}", flush=True)
    if args.behaviour == "exit-early":
        print("INFO loading weights", flush=True)
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        sys.exit(1)
    if args.behaviour == "hang":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        note("FAKE_SERVER_PIDS", str(child.pid))
        print("INFO compiling graphs", flush=True)
        time.sleep(600)
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.behaviour == "slow-start":  # still loading, as a real server, but ends on SIGTERM
        print("INFO loading weights", flush=True)
        time.sleep(600)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
