"""Serves tests/browser/page.html for scripts/e2e-browser from its own loopback origin.

Usage: page_server.py PROXY_PORT REPORT_FILE
Binds 127.0.0.1 on a free port and prints it (one line). GET / answers the page with
PROXY_PORT filled in; POST /report writes the page's JSON report to REPORT_FILE (the test
waits for it). Exits when its stdin closes.
"""

import http.server
import os
import sys
import threading

PAGE = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html"), encoding="utf-8").read()
MAX_REPORT = 64 * 1024


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/":
            self.send_error(404)
            return
        page = PAGE.replace("PROXY_PORT", sys.argv[1]).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        if self.path != "/report" or not 0 < length <= MAX_REPORT:
            self.send_error(400)
            return
        data = self.rfile.read(length)
        tmp = sys.argv[2] + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, sys.argv[2])
        self.send_response(204)
        self.end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("page_server: " + (fmt % args) + "\n")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
