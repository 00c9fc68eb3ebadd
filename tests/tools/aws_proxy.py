#!/usr/bin/env python3
"""Test tooling: an HTTP proxy in front of moto server, on 127.0.0.1 only.

1. CloudWatch bridge. The Rust CloudWatch client speaks Smithy RPC v2 CBOR, which moto
   does not (getmoto/moto#9195); moto does speak CloudWatch's JSON 1.0 protocol. Requests
   to /service/<Service>/operation/<Op> are decoded from CBOR, sent to moto as JSON 1.0
   (X-Amz-Target), and the answer is encoded back to CBOR. Timestamps: CBOR tag 1 (epoch
   seconds) <-> JSON epoch seconds.
2. Fault injection. POST /__faults with {"rules": [{"action": "DescribeInstances",
   "count": 2, "code": "RequestLimitExceeded", "status": 503, "delay": 0}]} makes the next
   `count` calls of that action fail with that AWS error code in the service's own error
   format (EC2 XML, awsQuery XML, or CBOR), or wait `delay` seconds first. `"drop": true`
   closes the connection without an answer. `"rate": 0.2` makes a rule fire on that share
   of matching calls only, drawn from a generator seeded by `"seed"` in the same POST
   (deterministic for a given order of calls). `"action": "*"` matches every call.
   POST /__faults with {"clear": true} removes the rules but keeps the log.
   `"unavailable": [{"InstanceType": "m5.large", "Lifecycle": "spot", "SubnetId": "..."}]`
   on a CreateFleet rule answers as EC2 does when those pools have no capacity: their
   overrides (for a request in that Lifecycle; SubnetId optional) are taken out before
   moto sees the request, and the answer carries an `errorSet` item for each, with
   `code` (default InsufficientInstanceCapacity). With no override left, nothing is
   launched and the answer has only the errors.
3. Request log. GET /__log returns every call seen: service, action, parameters, status,
   and whether a fault was injected. POST /__reset clears the log and the rules.

Everything else is forwarded to moto unchanged, except that DynamoDB calls are forwarded
one at a time: DynamoDB applies a conditional write atomically, moto server does not.
"""

import argparse
import datetime as dt
import http.client
import json
import random
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cbor2

LOCK = threading.Lock()
RULES = []
LOG = []
RNG = random.Random(0)
DDB_LOCK = threading.Lock()

# JSON fields that are timestamps in CloudWatch's model (requests and responses).
TIMESTAMP_FIELDS = {
    "StartTime", "EndTime", "Timestamp", "Timestamps", "StateUpdatedTimestamp",
    "AlarmConfigurationUpdatedTimestamp", "StateTransitionedTimestamp",
    "LastModified", "StartDate", "EndDate", "CreationDate", "LastUpdateDate",
}


def to_json_value(v):
    """CBOR-decoded value -> JSON-able value (datetimes become epoch seconds)."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.timezone.utc)
        return v.timestamp()
    if isinstance(v, cbor2.CBORTag) and v.tag == 1:
        return float(v.value)
    if isinstance(v, dict):
        return {k: to_json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_json_value(x) for x in v]
    if isinstance(v, bytes):
        import base64
        return base64.b64encode(v).decode()
    return v


def parse_time(v):
    if isinstance(v, (int, float)):
        return dt.datetime.fromtimestamp(v, tz=dt.timezone.utc)
    if isinstance(v, str):
        s = v.replace("Z", "+00:00")
        try:
            t = dt.datetime.fromisoformat(s)
        except ValueError:
            return v
        return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
    return v


def to_cbor_value(v, key=None):
    """JSON response value -> CBOR-ready value (timestamp fields become datetimes)."""
    if isinstance(v, dict):
        return {k: to_cbor_value(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [to_cbor_value(x, key) for x in v]
    if key in TIMESTAMP_FIELDS:
        return parse_time(v)
    return v


def service_of(headers):
    auth = headers.get("Authorization", "")
    # Credential=AKID/20260101/us-east-1/ec2/aws4_request
    try:
        cred = auth.split("Credential=", 1)[1].split(",", 1)[0]
        return cred.split("/")[3]
    except IndexError:
        return "unknown"


def error_body(service, protocol, code, message):
    if protocol == "cbor":
        return cbor2.dumps({"__type": code, "message": message}), "application/cbor"
    if service == "ec2":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code>"
                f"<Message>{message}</Message></Error></Errors><RequestID>fault-injected</RequestID></Response>")
    else:
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                f"</Error><RequestId>fault-injected</RequestId></ErrorResponse>")
    return body.encode(), "text/xml"


def pools_out(params, unavailable):
    """Split a CreateFleet request's overrides into those left and those without capacity.
    Returns (new params, [(override dict, lifecycle)])."""
    lifecycle = params.get("TargetCapacitySpecification.DefaultTargetCapacityType", "on-demand")
    prefix = "LaunchTemplateConfigs.1.Overrides."
    overrides = {}
    for k, v in params.items():
        if k.startswith(prefix):
            n, field = k[len(prefix):].split(".", 1)
            overrides.setdefault(int(n), {})[field] = v
    kept, out = [], []
    for n in sorted(overrides):
        o = overrides[n]
        gone = any(
            u.get("Lifecycle", lifecycle) == lifecycle
            and u.get("InstanceType") in (None, o.get("InstanceType"))
            and u.get("SubnetId") in (None, o.get("SubnetId"))
            for u in unavailable
        )
        (out if gone else kept).append(o)
    new = {k: v for k, v in params.items() if not k.startswith(prefix)}
    for i, o in enumerate(kept, start=1):
        for field, v in o.items():
            new[f"{prefix}{i}.{field}"] = v
    return new, [(o, lifecycle) for o in out], len(kept)


def fleet_errors_xml(params, out, code):
    name = params.get("LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName", "")
    version = params.get("LaunchTemplateConfigs.1.LaunchTemplateSpecification.Version", "")
    items = []
    for o, lifecycle in out:
        fields = "".join(
            f"<{tag}>{o[key]}</{tag}>"
            for key, tag in (("InstanceType", "instanceType"), ("SubnetId", "subnetId"))
            if key in o
        )
        items.append(
            "<item><launchTemplateAndOverrides><launchTemplateSpecification>"
            f"<launchTemplateName>{name}</launchTemplateName><version>{version}</version>"
            f"</launchTemplateSpecification><overrides>{fields}</overrides></launchTemplateAndOverrides>"
            f"<lifecycle>{lifecycle}</lifecycle><errorCode>{code}</errorCode>"
            "<errorMessage>There is no Spot capacity available that matches your request (injected by aws_proxy)</errorMessage></item>"
        )
    return "<errorSet>" + "".join(items) + "</errorSet>"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 5000)

    def log_message(self, fmt, *args):  # quiet
        pass

    def _reply(self, status, body, ctype, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _control(self, body):
        if self.path == "/__log" and self.command == "GET":
            with LOCK:
                data = json.dumps(LOG).encode()
            return self._reply(200, data, "application/json")
        if self.path == "/__faults" and self.command == "POST":
            doc = json.loads(body or b"{}")
            with LOCK:
                if doc.get("clear"):
                    RULES.clear()
                if "seed" in doc:
                    RNG.seed(doc["seed"])
                RULES.extend(doc.get("rules", []))
            return self._reply(200, b"{}", "application/json")
        if self.path == "/__reset" and self.command == "POST":
            with LOCK:
                RULES.clear()
                LOG.clear()
            return self._reply(200, b"{}", "application/json")
        if self.path == "/__ping":
            return self._reply(200, b"pong", "text/plain")
        return self._reply(404, b"unknown control path", "text/plain")

    def _forward(self, method, path, headers, body):
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def _take_fault(self, action):
        with LOCK:
            for r in RULES:
                if r.get("action") in (action, "*") and r.get("count", 0) > 0:
                    if "rate" in r and RNG.random() >= float(r["rate"]):
                        continue
                    r["count"] -= 1
                    return dict(r)
        return None

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/__"):
            return self._control(body)
        service = service_of(self.headers)
        is_cbor = self.path.startswith("/service/") and "/operation/" in self.path
        if is_cbor:
            action = self.path.rsplit("/operation/", 1)[1]
            params = to_json_value(cbor2.loads(body)) if body else {}
        else:
            form = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
            params = {k: v[0] if len(v) == 1 else v for k, v in form.items()}
            action = params.get("Action") or self.headers.get("X-Amz-Target", "").split(".")[-1] or "?"
        entry = {"service": service, "action": action, "params": params, "time": time.time()}
        fault = self._take_fault(action)
        if fault and fault.get("unavailable") is not None and action == "CreateFleet" and not is_cbor:
            code = fault.get("code") or "InsufficientInstanceCapacity"
            new, out, left = pools_out(params, fault["unavailable"])
            errors = fleet_errors_xml(params, out, code) if out else ""
            entry["injected"] = "unavailable" if out else None
            if left == 0:
                body = ('<?xml version="1.0" encoding="utf-8"?><CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15">'
                        f"<fleetId>fleet-injected</fleetId>{errors}<fleetInstanceSet/><requestId>fault-injected</requestId></CreateFleetResponse>").encode()
                entry["status"] = 200
                with LOCK:
                    LOG.append(entry)
                return self._reply(200, body, "text/xml")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "host")}
            status, data, rh = self._forward(self.command, self.path, headers, urllib.parse.urlencode(new).encode())
            if status == 200 and errors:
                text = data.decode()
                data = text.replace("<fleetInstanceSet>", errors + "<fleetInstanceSet>", 1).encode()
            entry["status"] = status
            with LOCK:
                LOG.append(entry)
            return self._reply(status, data, rh.get("Content-Type") or rh.get("content-type") or "text/xml")
        if fault:
            if fault.get("delay"):
                time.sleep(float(fault["delay"]))
                entry["delayed"] = float(fault["delay"])
            if fault.get("drop"):
                entry.update(status=0, injected="drop")
                with LOCK:
                    LOG.append(entry)
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return None
            if fault.get("code"):
                status = int(fault.get("status", 400))
                data, ctype = error_body(service, "cbor" if is_cbor else "xml", fault["code"], "injected by aws_proxy")
                extra = {"smithy-protocol": "rpc-v2-cbor"} if is_cbor else {}
                entry.update(status=status, injected=fault["code"])
                with LOCK:
                    LOG.append(entry)
                return self._reply(status, data, ctype, extra)
        if is_cbor:
            svc = self.path.split("/")[2]
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("content-length", "content-type", "smithy-protocol", "accept", "host")}
            headers["Content-Type"] = "application/x-amz-json-1.0"
            headers["X-Amz-Target"] = f"{svc}.{action}"
            status, data, _ = self._forward("POST", "/", headers, json.dumps(params).encode())
            try:
                doc = json.loads(data) if data else {}
            except ValueError:
                doc = {"__type": "InternalFailure", "message": data.decode(errors="replace")[:500]}
            if status >= 300 and "__type" in doc:
                code = str(doc["__type"]).split("#")[-1]
                doc = {"__type": code, "message": doc.get("message") or doc.get("Message") or ""}
            out = cbor2.dumps(to_cbor_value(doc), datetime_as_timestamp=True, timezone=dt.timezone.utc)
            entry["status"] = status
            with LOCK:
                LOG.append(entry)
            return self._reply(status, out, "application/cbor", {"smithy-protocol": "rpc-v2-cbor"})
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "host")}
        if self.headers.get("X-Amz-Target", "").startswith("DynamoDB"):
            # DynamoDB evaluates a conditional write atomically; moto server handles
            # requests on threads without that guarantee, so two racing conditional
            # updates can both pass. Serialize DynamoDB calls to get DynamoDB's semantics.
            with DDB_LOCK:
                status, data, rh = self._forward(self.command, self.path, headers, body)
        else:
            status, data, rh = self._forward(self.command, self.path, headers, body)
        entry["status"] = status
        with LOCK:
            LOG.append(entry)
        ctype = rh.get("Content-Type") or rh.get("content-type") or "text/xml"
        return self._reply(status, data, ctype)

    def do_POST(self):
        self._handle()

    def do_GET(self):
        self._handle()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", type=int, required=True, help="moto server port on 127.0.0.1")
    args = ap.parse_args()
    Handler.upstream = ("127.0.0.1", args.upstream)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"aws_proxy listening on 127.0.0.1:{args.port} -> moto 127.0.0.1:{args.upstream}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
