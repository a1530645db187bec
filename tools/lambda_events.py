"""Lambda's Invoke API for asynchronous invocations, in front of `cargo lambda watch`.

A background response is made by another invocation of the function, which the function
asks for through Lambda's Invoke API with `InvocationType: Event`: Lambda answers 202 at
once and invokes the function later. `cargo lambda watch` serves the Invoke API but answers
only once the invocation has ended, so a function that waits for its 202 before answering
its caller would wait for itself. This stand-in answers 202 at once, as Lambda does, and
then invokes the function through `cargo lambda watch`, whose queue hands the event to the
next instance that asks for one. The function finds it with `AWS_ENDPOINT_URL_LAMBDA`
(`make watch` and the Python tests set it).

    python3 tools/lambda_events.py <port> <cargo lambda watch's URL> [<function name>]

The function name is the one `cargo lambda watch` knows the function by: `_` when it runs
with `--only-lambda-apis` (the tests), the binary's name (`bootstrap`) otherwise. Standard
library only.
"""

import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2015-03-31/functions/"


def main():
    port, target = int(sys.argv[1]), sys.argv[2].rstrip("/")
    function = sys.argv[3] if len(sys.argv) > 3 else "_"

    def forward(payload):
        request = urllib.request.Request(
            f"{target}{PREFIX}{function}/invocations", data=payload, method="POST",
            headers={"content-type": "application/json"})
        try:
            # As long as an invocation may last: Lambda's limit is 15 minutes.
            with urllib.request.urlopen(request, timeout=900) as answer:
                answer.read()
        except OSError as error:
            print(f"lambda_events: the invocation failed: {error}", file=sys.stderr, flush=True)

    class Invoke(BaseHTTPRequestHandler):
        def do_POST(self):
            payload = self.rfile.read(int(self.headers.get("content-length") or 0))
            if not (self.path.startswith(PREFIX) and self.path.split("?")[0].endswith("/invocations")):
                return self.answer(404, b'{"Type":"User","message":"Function not found"}')
            if self.headers.get("x-amz-invocation-type") != "Event":
                return self.answer(400, b'{"Type":"User","message":"only Event invocations are served here"}')
            self.answer(202, b"")
            threading.Thread(target=forward, args=(payload,), daemon=True).start()

        def answer(self, status, body):
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Invoke)
    server.serve_forever()


if __name__ == "__main__":
    main()
