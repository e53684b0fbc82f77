#!/usr/bin/env bash
# The fault matrix and the soak (bench/chaos.py): builds the release binaries, installs what the
# driver needs (redis-server from apt; aiohttp, PyJWT and the Standard Webhooks reference library
# in a venv under target/), then runs it.
#   bench/chaos.sh matrix              # every fault of the matrix, about 20 minutes
#   bench/chaos.sh soak --minutes 30   # the realistic mix with faults cycling
#   bench/chaos.sh smoke               # one minute (CI)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
fi

venv="${CARGO_TARGET_DIR:-target}/chaos-python"
pins="aiohttp==3.14.5 standardwebhooks==1.3.0 pyjwt[crypto]==2.15.1"
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
  echo "== installing the driver's Python packages in $venv" >&2
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q $pins
  echo "$pins" > "$venv/.pins"
fi

echo "== building release binaries" >&2
# The same packages as bench/run.sh, so that one build (same feature set) serves both.
cargo build --release --locked -p wdt-gateway -p wdt-emulator -p wdt-bench-ceiling -p wdt-bench-driver >&2

ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
exec "$venv/bin/python" bench/chaos.py "$@"
