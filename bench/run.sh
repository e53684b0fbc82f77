#!/usr/bin/env bash
# The benchmark suite: builds the release binaries, then runs bench/bench.py, which starts the
# emulator, the gateway (also two replicas with and without Redis) and the bare-axum ceiling on loopback and writes a JSON record under
# bench/results/ (or --out FILE). `bench/run.sh --smoke` runs about a second per scenario (CI).
# Then `python3 bench/report.py bench/results/<record>.json` prints the tables of
# docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v wrk >/dev/null 2>&1; then
  echo "== installing wrk (load generator)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (the two-replica scenario)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
fi

echo "== building release binaries"
cargo build --release --locked -p wdt-gateway -p wdt-emulator -p wdt-bench-ceiling -p wdt-bench-driver

# A stampede opens a thousand connections at once.
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

record=$(python3 bench/bench.py "$@")
echo "== record: $record"
python3 bench/report.py "$record"
