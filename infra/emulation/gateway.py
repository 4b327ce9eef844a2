"""The template's HTTP API in front of its functions (the `gateway`
subcommand): API Gateway's own answers and limits, the route matcher
(infra/check_template.py uses it too), the authorizer with its cache, and
payload format 2.0 events; plus the route table the subcommand is given,
read from the expanded template.
"""

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request

import sam

from .common import ACCOUNT, REGION, log


# API Gateway's own answers (HTTP API), before or instead of a function's.
GW_NOT_FOUND = (404, {"message": "Not Found"})
GW_UNAUTHORIZED = (401, {"message": "Unauthorized"})
GW_FORBIDDEN = (403, {"message": "Forbidden"})
GW_TOO_LARGE = (413, {"message": "Request Entity Too Large"})
GW_ERROR = (500, {"message": "Internal Server Error"})
GW_UNAVAILABLE = (503, {"message": "Service Unavailable"})
# An HTTP API's integration ends at 30 s; a request body is at most 10 MB;
# a synchronous Lambda invocation's event and answer at most 6 MB.
GW_TIMEOUT = 30
GW_BODY_LIMIT = 10 * 1024 * 1024
LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024


def route_regex(path):
    """An HTTP API route path as a regular expression: `{name}` is one
    segment, `{name+}` (last) one or more."""
    out = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("+}"):
            out += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            out += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            out += re.escape(part)
    return re.compile(out + "$")


def match_route(routes, method, path):
    """The route API Gateway picks: an exact path before one with
    variables before a greedy one, a route for the method before ANY.
    None when no route matches (API Gateway answers 404 itself)."""
    best = None
    for r in routes:
        if r["method"] not in (method, "ANY"):
            continue
        m = route_regex(r["path"]).match(path)
        if not m:
            continue
        greedy = "+}" in r["path"]
        variables = r["path"].count("{")
        score = (not greedy, -variables, len(r["path"]), r["method"] == method)
        if best is None or score > best[0]:
            best = (score, r, {k.rstrip("+"): v for k, v in m.groupdict().items()})
    return (best[1], best[2]) if best else (None, None)


def route_spec(cfn, params):
    """What the `gateway` subcommand is given (LOTSAWA_EMULATE_ROUTES): the
    expanded template's routes, its authorizers with their cache TTL
    resolved, and the binary each function is built from."""
    route_table, authorizers = sam.routes(cfn)
    binaries = {name: f["binary"] for name, f in sam.functions(cfn).items()}
    resolver = sam.Resolver(cfn, params, {}, {})
    for a in authorizers.values():
        a["ttl"] = int(resolver.r(a["ttl"]) or 0)
    return {"routes": route_table, "authorizers": authorizers, "binaries": binaries}


TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded", "application/problem+json")


def gateway(port):
    """The template's HTTP API in front of its functions: the route table,
    the authorizer (identity source required, simple responses, answers
    cached for the template's TTL), payload format 2.0 events, binary
    bodies base64-encoded, the 10 MB request and 6 MB invocation limits and
    the 30 s integration timeout. Responses are buffered, as an HTTP API's
    are."""
    import base64
    import uuid
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl

    ports = json.loads(os.environ["LOTSAWA_EMULATE_PORTS"])
    timeouts = json.loads(os.environ["LOTSAWA_EMULATE_TIMEOUTS"])
    spec = json.loads(os.environ["LOTSAWA_EMULATE_ROUTES"])
    routes, authorizers, binaries = spec["routes"], spec["authorizers"], spec["binaries"]
    cache, cache_lock = {}, threading.Lock()

    def call(function, event):
        binary = binaries[function]
        data = json.dumps(event).encode()
        if len(data) > LAMBDA_PAYLOAD_LIMIT:
            return "too large", None
        timeout = min(GW_TIMEOUT, float(timeouts[binary]))
        req = urllib.request.Request(
            f"http://127.0.0.1:{ports[binary]}/2015-03-31/functions/{binary}/invocations",
            data=data, headers={"content-type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
        except TimeoutError:
            return "timeout", None
        except urllib.error.HTTPError as e:
            log(f"gateway: {binary} answered {e.code}")
            return "error", None
        except Exception as e:  # noqa: BLE001 - connection lost: an integration failure
            if "timed out" in str(e):
                return "timeout", None
            log(f"gateway: {binary} failed: {e}")
            return "error", None
        if len(body) > LAMBDA_PAYLOAD_LIMIT:
            return "error", None
        try:
            result = json.loads(body or b"null")
        except ValueError:
            return "error", None
        if isinstance(result, dict) and result.get("errorType"):
            log(f"gateway: {binary} raised {result.get('errorType')}: {result.get('errorMessage')}")
            return "error", None
        return "ok", result

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def answer(self, status, body, headers=None, cookies=()):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            sent = set()
            for k, v in (headers or {}).items():
                if k.lower() in ("content-length", "transfer-encoding", "connection"):
                    continue
                self.send_header(k, v)
                sent.add(k.lower())
            if "content-type" not in sent and not isinstance(body, bytes):
                self.send_header("content-type", "application/json")
            for c in cookies:
                self.send_header("set-cookie", c)
            self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def handle_any(self):
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                # Not read here: refuse it and close, so its bytes are never
                # taken for the next request.
                self.close_connection = True
                return self.answer(411, {"message": "Length Required"})
            length = int(self.headers.get("content-length") or 0)
            if length > GW_BODY_LIMIT:
                self.close_connection = True
                return self.answer(*GW_TOO_LARGE)
            raw = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            route, params = match_route(routes, self.command, path)
            if route is None:
                return self.answer(*GW_NOT_FOUND)
            headers = {}
            for k, v in self.headers.items():
                k = k.lower()
                headers[k] = f"{headers[k]},{v}" if k in headers else v
            cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
            qs = {}
            for k, v in parse_qsl(query, keep_blank_values=True):
                qs[k] = f"{qs[k]},{v}" if k in qs else v
            route_key = f"{route['method']} {route['path']}"
            now = time.time()
            context = {
                "accountId": ACCOUNT, "apiId": "emulated", "domainName": headers.get("host", "127.0.0.1"),
                "domainPrefix": "emulated", "requestId": uuid.uuid4().hex, "routeKey": route_key,
                "stage": "$default", "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
                "http": {"method": self.command, "path": path, "protocol": "HTTP/1.1",
                         "sourceIp": self.client_address[0], "userAgent": headers.get("user-agent", "")},
            }
            base = {"version": "2.0", "routeKey": route_key, "rawPath": path, "rawQueryString": query,
                    "headers": headers, "requestContext": context}
            if cookies:
                base["cookies"] = cookies
            if qs:
                base["queryStringParameters"] = qs
            if params:
                base["pathParameters"] = params
            if route["authorizer"]:
                a = authorizers[route["authorizer"]]
                identity = [headers.get(h) for h in a["identity"]]
                if any(not v for v in identity):
                    return self.answer(*GW_UNAUTHORIZED)
                key = (route["authorizer"], tuple(identity))
                with cache_lock:
                    hit = cache.get(key)
                if hit and hit[0] > now:
                    allowed, auth_context = hit[1], hit[2]
                else:
                    event = dict(base, type="REQUEST", identitySource=identity,
                                 routeArn=f"arn:aws:execute-api:{REGION}:{ACCOUNT}:emulated/$default/"
                                          f"{self.command}{path}")
                    outcome, result = call(a["function"], event)
                    if outcome != "ok" or not isinstance(result, dict):
                        return self.answer(*GW_ERROR)
                    allowed, auth_context = bool(result.get("isAuthorized")), result.get("context") or {}
                    if a["ttl"] > 0:
                        with cache_lock:
                            cache[key] = (now + a["ttl"], allowed, auth_context)
                if not allowed:
                    return self.answer(*GW_FORBIDDEN)
                context["authorizer"] = {"lambda": auth_context}
            ctype = headers.get("content-type", "")
            if raw and not ctype.lower().startswith(TEXT_TYPES):
                body, encoded = base64.b64encode(raw).decode(), True
            else:
                try:
                    body, encoded = raw.decode("utf-8"), False
                except UnicodeDecodeError:
                    body, encoded = base64.b64encode(raw).decode(), True
            event = dict(base, body=body if raw else None, isBase64Encoded=encoded)
            outcome, result = call(route["function"], event)
            if outcome == "too large":
                return self.answer(*GW_TOO_LARGE)
            if outcome == "timeout":
                return self.answer(*GW_UNAVAILABLE)
            if outcome != "ok":
                return self.answer(*GW_ERROR)
            if not isinstance(result, dict) or "statusCode" not in result:
                # Payload 2.0 without a status: the answer is the body.
                return self.answer(200, json.dumps(result).encode(), {"content-type": "application/json"})
            out = result.get("body") or ""
            out = base64.b64decode(out) if result.get("isBase64Encoded") else out.encode()
            return self.answer(int(result["statusCode"]), out, result.get("headers") or {},
                               result.get("cookies") or ())

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    log(f"gateway on {port}: {len(routes)} routes")
    server.serve_forever()
