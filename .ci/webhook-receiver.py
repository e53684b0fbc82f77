"""A webhook receiver for the end-to-end tests: it checks deliveries with a library no one here wrote.

Signatures are verified with the PyPI package `standardwebhooks` (the Standard Webhooks
reference library), never with the gateway's own code, so a signing bug cannot hide on both
sides. Only that package and the standard library are used; `.ci/run` installs the package,
pinned, into target/webhook-receiver and exports WDT_WEBHOOK_RECEIVER_PYTHON for the tests.

    python webhook-receiver.py --port 0

binds 127.0.0.1 (port 0 picks a free one), prints one line `listening <port>` and serves until
SIGTERM or SIGINT. Nothing else goes to stdout; errors go to stderr.

Control API (JSON in, JSON out):

    POST /__control/secrets   {"secrets": ["whsec_…", …]}
        The secrets to verify with; a message verifies if any of them verifies it.
    POST /__control/mode      {"mode": "ok" | "fail" | "hang", "status"?: int, "delay_secs"?: number}
        ok:   answer `status` (default 204; any other status comes with the body `{}`), after
              `delay_secs` (default 0).
        fail: answer `status` (default 500) with `{"error": …}`.
        hang: wait 120 s, then answer `status` (default 204).
    GET  /__control/received
        {"received": [{"webhook_id", "webhook_timestamp", "type", "verified", "error", "body",
                       "answered", "at", "path", "headers"}, …]} in arrival order.
        `webhook_id` and `webhook_timestamp` are the headers as sent (null when missing); `type`
        is the body's `type`; `error` is the library's message when `verified` is false; `body`
        is the parsed JSON (null when the body is not JSON); `answered` is the status the
        receiver answers (or answered) with; `at` is the arrival time (unix seconds, float);
        `path` is the request path; `headers` are all request headers, names in lower case.
    POST /__control/reset
        Forgets what was received (secrets and mode stay).

Every other POST is a webhook: it is recorded on arrival, then answered as the mode says. A
message that fails verification is recorded too and answered 400 with the error, whatever the
mode.
"""

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

HANG_SECS = 120
MAX_BODY = 16 * 1024 * 1024


class State:
    """What the control API sets and the webhooks fill; one lock guards all of it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.secrets = []  # [(text, Webhook)]
        self.mode = {"mode": "ok", "status": None, "delay_secs": 0.0}
        self.received = []


STATE = State()


class BadRequest(Exception):
    pass


def verify(body, headers, webhooks):
    """(verified, error): whether any secret verifies the message, else the library's message."""
    if not webhooks:
        return False, "no secret configured (POST /__control/secrets)"
    first_error = None
    for webhook in webhooks:
        try:
            webhook.verify(body, headers, json_parse=False)
            return True, None
        except Exception as error:  # the library's WebhookVerificationError, or a malformed header
            if first_error is None:
                first_error = str(error) or type(error).__name__
    return False, first_error


def parse_json(body):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "webhook-receiver"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def log_error(self, format, *args):  # noqa: A002
        sys.stderr.write("webhook-receiver: " + (format % args) + "\n")

    # --- reading and answering

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > MAX_BODY:
                    raise BadRequest("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise BadRequest("bad Content-Length")
        return self.rfile.read(length)

    def answer(self, status, payload=None):
        try:
            self.send_response(status)
            if status == 204 or payload is None:
                if status != 204:
                    self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                data = json.dumps(payload).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The sender gave up (its timeout, during a hang): nothing to answer any more.
            self.close_connection = True

    # --- routes

    def do_GET(self):
        if self.path == "/__control/received":
            with STATE.lock:
                received = list(STATE.received)
            self.answer(200, {"received": received})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        try:
            body = self.read_body()
        except (BadRequest, ValueError) as error:
            self.close_connection = True
            self.answer(400, {"error": str(error)})
            return
        if self.path.startswith("/__control/"):
            try:
                self.control(self.path, body)
            except BadRequest as error:
                self.answer(400, {"error": str(error)})
        else:
            self.webhook(body)

    def control(self, path, body):
        if path == "/__control/reset":
            with STATE.lock:
                STATE.received.clear()
            self.answer(200, {})
            return
        request = parse_json(body)
        if not isinstance(request, dict):
            raise BadRequest("the body must be a JSON object")
        if path == "/__control/secrets":
            secrets = request.get("secrets")
            if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
                raise BadRequest('"secrets" must be a list of strings')
            parsed = []
            for secret in secrets:
                try:
                    parsed.append((secret, Webhook(secret)))
                except Exception as error:
                    raise BadRequest(f"invalid secret: {error}") from None
            with STATE.lock:
                STATE.secrets = parsed
            self.answer(200, {})
        elif path == "/__control/mode":
            mode = request.get("mode")
            status = request.get("status")
            delay = request.get("delay_secs", 0)
            if mode not in ("ok", "fail", "hang"):
                raise BadRequest('"mode" must be "ok", "fail" or "hang"')
            if status is not None and (
                not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
            ):
                raise BadRequest('"status" must be an HTTP status (100-599)')
            if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
                raise BadRequest('"delay_secs" must be a number, 0 or more')
            with STATE.lock:
                STATE.mode = {"mode": mode, "status": status, "delay_secs": float(delay)}
            self.answer(200, {})
        else:
            self.answer(404, {"error": "not found"})

    def webhook(self, body):
        at = time.time()
        headers = {name.lower(): value for name, value in self.headers.items()}
        with STATE.lock:
            webhooks = [webhook for _, webhook in STATE.secrets]
            mode = dict(STATE.mode)
        verified, error = verify(body, headers, webhooks)
        parsed = parse_json(body)
        if not verified:
            status = 400
        elif mode["mode"] == "fail":
            status = mode["status"] or 500
        else:
            status = mode["status"] or 204
        record = {
            "webhook_id": headers.get("webhook-id"),
            "webhook_timestamp": headers.get("webhook-timestamp"),
            "type": parsed.get("type") if isinstance(parsed, dict) else None,
            "verified": verified,
            "error": error,
            "body": parsed,
            "answered": status,
            "at": at,
            "path": self.path,
            "headers": headers,
        }
        with STATE.lock:
            STATE.received.append(record)
        if not verified:
            self.answer(400, {"error": error})
        elif mode["mode"] == "fail":
            self.answer(status, {"error": "failing on purpose (mode fail)"})
        elif mode["mode"] == "hang":
            time.sleep(HANG_SECS)
            self.answer(status, {})
        else:
            if mode["delay_secs"] > 0:
                time.sleep(mode["delay_secs"])
            self.answer(status, {})


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging answer never holds the process up at exit
    block_on_close = False

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)  # a traceback on stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    args = parser.parse_args()

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = Server(("127.0.0.1", args.port), Handler)
    try:
        print(f"listening {server.server_address[1]}", flush=True)
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
