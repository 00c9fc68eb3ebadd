#!/usr/bin/env bash
# The daemon's HTTP API against its OpenAPI document (src/openapi.json, served at
# /v1/openapi.json), with schemathesis: starts `coxswain run` on the simulator (the built-in
# demo) on a free port of 127.0.0.1 with a random token, runs every schemathesis check
# (response schemas, status codes, content types, headers, 5xx, the token, invalid input
# rejected, valid input accepted, ...) with bounded examples and time, and stops the daemon.
# Exits non-zero on any failure.
#
# Usage: tests/tools/schemathesis.sh [COXSWAIN_BIN] [VENV_PYTHON] [-- SCHEMATHESIS_ARGS...]
#   COXSWAIN_BIN  the coxswain binary (default: env COXSWAIN_BIN, else target/debug/coxswain)
#   VENV_PYTHON   python of a venv with tests/tools/requirements.txt installed (default: env
#                 COXSWAIN_VENV, a venv directory or its python, else .venv)
#   extra arguments after `--` go to `schemathesis run` (e.g. --seed 1, --exclude-path P)
# Environment:
#   SCHEMA_SOURCE   schema file or URL instead of http://127.0.0.1:PORT/v1/openapi.json
#   ST_MAX_EXAMPLES test cases per operation and phase (default 30)
#   ST_MAX_SECONDS  hard limit on the schemathesis run (default 300)
# Only 127.0.0.1 is ever contacted.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

bin="${COXSWAIN_BIN:-$root/target/debug/coxswain}"
venv="${COXSWAIN_VENV:-$root/.venv}"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then bin="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then venv="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
if [ -d "$venv" ]; then py="$venv/bin/python"; else py="$venv"; fi
max_examples="${ST_MAX_EXAMPLES:-30}"
max_seconds="${ST_MAX_SECONDS:-300}"

if [ ! -x "$bin" ]; then
  echo "error: no coxswain binary at $bin (cargo build, or pass its path)" >&2
  exit 2
fi
if ! "$py" -c 'import schemathesis' 2>/dev/null; then
  echo "error: $py has no schemathesis: pip install -r tests/tools/requirements.txt into that venv" >&2
  exit 2
fi
# Absolute paths: schemathesis runs in a scratch directory (its files stay there).
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
bin="$(abs "$bin")"
case "$py" in */*) py="$(abs "$py")" ;; esac
case "${SCHEMA_SOURCE:-}" in
  "" | http://* | https://*) ;;
  *) SCHEMA_SOURCE="$(abs "$SCHEMA_SOURCE")" ;;
esac

work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill "$daemon_pid" 2>/dev/null || true
    # A first signal lets the pass in flight finish; a second one ends it at once.
    for _ in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

token="$("$py" -c 'import secrets; print(secrets.token_urlsafe(24))')"

# GET http://127.0.0.1:PORT/PATH: prints the status code (000 when nothing answers).
http_status() {
  "$py" - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

# A free port can be taken between the check and the bind: try a few.
port=""
for attempt in 1 2 3; do
  candidate="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  COXSWAIN_API_TOKEN="$token" "$bin" run --cloud sim --listen "127.0.0.1:$candidate" \
    >"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 300); do
    if ! kill -0 "$daemon_pid" 2>/dev/null; then break; fi
    if [ "$(http_status "http://127.0.0.1:$candidate/healthz")" = "200" ]; then
      port="$candidate"
      break
    fi
    sleep 0.1
  done
  if [ -n "$port" ]; then break; fi
  echo "warning: the daemon did not come up on 127.0.0.1:$candidate (try $attempt)" >&2
  tail -n 20 "$work/daemon.log" >&2 || true
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=""
done
if [ -z "$port" ]; then
  echo "error: the daemon did not answer /healthz" >&2
  exit 1
fi
base="http://127.0.0.1:$port"
schema="${SCHEMA_SOURCE:-$base/v1/openapi.json}"
echo "==> coxswain on $base (pid $daemon_pid), schema $schema"

# A request that is well formed but refused by policy (a build not in the fleet's form, not
# validated in staging, not approved) is a 422 with `refused: true`: valid data, answered
# as the API documents it.
cat >"$work/schemathesis.toml" <<'EOF'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429", "5xx"]
EOF

status=0
(
  cd "$work"
  timeout --kill-after=10 "$max_seconds" \
    "$py" -m schemathesis.cli --config-file "$work/schemathesis.toml" --no-color run "$schema" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --max-examples "$max_examples" \
    --request-timeout 30 \
    --generation-database none \
    "$@"
) || status=$?

# Still serving after all that?
if [ "$(http_status "$base/healthz")" != "200" ]; then
  echo "error: the daemon stopped answering /healthz during the run" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "error: schemathesis did not finish within ${max_seconds}s" >&2
  fi
  echo "==> last lines of the daemon's log" >&2
  tail -n 40 "$work/daemon.log" >&2 || true
  echo "schemathesis: FAILED (exit $status)" >&2
  exit "$status"
fi
echo "schemathesis: passed"
