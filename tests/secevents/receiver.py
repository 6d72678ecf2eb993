"""A real HTTP receiver process for the delivery tests: fails in scripted ways, then recovers.

usage: receiver.py PORT LOG_FILE SECRET FAILURES [ROOT [REFUSE]]
FAILURES is a comma-separated list applied to successive requests, then every request succeeds:
  timeout   sleep longer than the sender's timeout, then answer 200 (too late)
  500       answer 500
  slow      sleep 0.3 s, then answer 200 (a slow but healthy receiver: counts as delivered)
  cut       read half the body, then close the connection without answering
  redirect  answer 302 to /elsewhere
  400       answer 400
  429       answer 429 with Retry-After: 0
  503soon   answer 503 with Retry-After: soon (neither a number nor an HTTP date)
  NNN       any other HTTP status, e.g. 401, 422, 425
REFUSE, as STATUS:TEXT, refuses every request whose body contains TEXT with STATUS, whatever the plan says: a
poison event, refused each time it is sent, while the others are received.
Every request that reaches the body is logged as one JSON line {id, ts, valid, status, path, body}.
"""

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, sys.argv[5] if len(sys.argv) > 5 else ".")
from gateway.secevents.signing import verify  # noqa: E402

PORT, LOG, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3]
PLAN = [p for p in sys.argv[4].split(",") if p] if len(sys.argv) > 4 else []
REFUSE_STATUS, _, REFUSE_TEXT = (sys.argv[6] if len(sys.argv) > 6 else "").partition(":")
lock = threading.Lock()
counter = {"n": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        with lock:
            i = counter["n"]
            counter["n"] += 1
        mode = PLAN[i] if i < len(PLAN) else "ok"
        length = int(self.headers.get("Content-Length", 0))
        if mode == "cut":
            self.rfile.read(length // 2)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
            self.close_connection = True
            return
        body = self.rfile.read(length)
        v = verify(SECRET, dict(self.headers.items()), body, max_age=300)
        if REFUSE_TEXT and REFUSE_TEXT.encode() in body:
            mode = REFUSE_STATUS
        status = int(mode) if mode.isdigit() else {"ok": 200, "slow": 200, "timeout": 200, "redirect": 302,
                                                   "503soon": 503}[mode]
        if mode == "timeout":
            time.sleep(2.0)
        if mode == "slow":
            time.sleep(0.3)
        with lock, open(LOG, "a") as f:
            f.write(json.dumps({"id": self.headers.get("X-Ztgate-Delivery"), "ts": time.time(), "valid": v.valid,
                                "status": status, "mode": mode, "path": self.path,
                                "body": body.decode()}) + "\n")
        self.send_response(status)
        if mode == "redirect":
            self.send_header("Location", f"http://127.0.0.1:{PORT}/elsewhere")
        if mode == "429":
            self.send_header("Retry-After", "0")
        if mode == "503soon":
            self.send_header("Retry-After", "soon")
        self.send_header("Content-Length", "0")
        self.end_headers()


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
