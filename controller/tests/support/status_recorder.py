"""A stand-in for a git host's commit-status API, for the commit status
tests: records every request (method, path, headers, JSON body) as one JSON
line in LOG and answers 201, or 500 to the first FAIL_FIRST requests.
Writes the port it listens on (127.0.0.1, chosen by the system) to
PORT_FILE once it listens."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT_FILE, LOG = sys.argv[1], sys.argv[2]
FAIL_FIRST = int(os.environ.get("FAIL_FIRST", "0"))
seen = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        seen += 1
        failing = seen <= FAIL_FIRST
        record = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": json.loads(raw or b"null"),
            "answered": 500 if failing else 201,
        }
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(500 if failing else 201)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
