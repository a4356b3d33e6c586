#!/usr/bin/env bash
# Node-RED 4.1 and scriptd through the same Mosquitto, in one run, on loopback.
# See bench/peer/README.md. Usage: bench/peer/run.sh   (from anywhere; ~10 minutes)
#
# Environment (all optional):
#   RUNS=3            runs per system and load
#   EVENTS=50000      occurrences per full-speed run
#   RATE=1000         paced rate (occurrences/s); a paced run lasts PACED_SECONDS
#   PACED_SECONDS=10
#   RULES=1000        rules (Node-RED) and scripts (scriptd)
#   NODE_RED=4.1      npm version range of node-red to install
#   SCRIPTD=<repo>/target/release/scriptd
#   LOADS="full paced"  which loads to run
#   NODELAY=1         add `set_tcp_nodelay true` to the broker configuration (Nagle off)
#   QUIET_WAIT=60     before each run, wait up to this many seconds for the machine to be < 25 % busy
#   KEEP=1            keep the temporary folder (logs, results.jsonl)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RUNS=${RUNS:-3}
EVENTS=${EVENTS:-50000}
RATE=${RATE:-1000}
PACED_SECONDS=${PACED_SECONDS:-10}
RULES=${RULES:-1000}
NODE_RED=${NODE_RED:-4.1}
SCRIPTD=${SCRIPTD:-$REPO/target/release/scriptd}
QUIET_WAIT=${QUIET_WAIT:-60}
LOADS=${LOADS:-full paced}
NODELAY=${NODELAY:-0}
PACED_EVENTS=$((RATE * PACED_SECONDS))

die() { echo "run.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

need node "install Node.js 18 or newer (Node-RED 4.1 needs it)"
need npm "install npm (it comes with Node.js)"
need mosquitto "install Mosquitto 2.0 (Debian/Ubuntu: apt-get install mosquitto)"
need python3 "install Python 3"
need cargo "install Rust (cargo builds the small MQTT load tool in bench/peer/mqttbench)"
need timeout "install GNU coreutils"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "Node.js $(node --version) is too old: Node-RED 4.1 needs 18 or newer"
[ -x "$SCRIPTD" ] || die "$SCRIPTD not found: build it first with 'cargo build --release' in $REPO"
[ -f "$REPO/packaging/mosquitto/bench.conf" ] || die "packaging/mosquitto/bench.conf not found"

WORK=$(mktemp -d /tmp/scriptd-peer.XXXXXX)
chmod 0755 "$WORK"   # Mosquitto started as root runs as `mosquitto` and needs to reach its folder
MOSQ_PID="" NR_PID="" CUR=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # The running step: `timeout` leads its own process group (scriptd bench and its daemon).
    [ -n "$CUR" ] && kill -TERM -- "-$CUR" 2>/dev/null || true
    for p in $NR_PID $MOSQ_PID; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $NR_PID $MOSQ_PID; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bounded SECONDS CMD...: runs CMD under `timeout` (its own process group, ended by the trap).
bounded() {
    local secs=$1; shift
    timeout -k 10 "$secs" "$@" &
    CUR=$!
    local rc=0
    wait "$CUR" || rc=$?
    CUR=""
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then die "timed out after ${secs}s: $*"; fi
    return "$rc"
}

PY="python3 $HERE/peer.py"
RESULTS=$WORK/results.jsonl
mkdir -p "$WORK/tmp"
: > "$RESULTS"

# 1. The load tool and Node-RED.
say "building bench/peer/mqttbench"
bounded 600 cargo build --release --quiet --manifest-path "$HERE/mqttbench/Cargo.toml"
MQTTBENCH=$HERE/mqttbench/target/release/mqttbench

say "installing node-red@~$NODE_RED into $WORK/nr (npm)"
mkdir -p "$WORK/nr/user"
(cd "$WORK/nr" && echo '{"name":"peer-bench","private":true}' > package.json)
bounded 900 npm install --prefix "$WORK/nr" --no-audit --no-fund --loglevel=error "node-red@~$NODE_RED" \
    > "$WORK/npm.log" 2>&1 || { tail -20 "$WORK/npm.log" >&2; die "npm install node-red@~$NODE_RED failed"; }
NR_VERSION=$(node -p "require('$WORK/nr/node_modules/node-red/package.json').version")
case "$NR_VERSION" in "$NODE_RED".*) ;; *) die "npm installed node-red $NR_VERSION, not $NODE_RED.x";; esac
MOSQ_VERSION=$(mosquitto -h 2>/dev/null | head -1 | sed 's/^mosquitto version //' || true)
say "node-red $NR_VERSION, node $(node --version), mosquitto $MOSQ_VERSION"

# 2. One Mosquitto: packaging/mosquitto/bench.conf on a free loopback port.
PORT=$($PY free-port)
mkdir -p "$WORK/mosquitto"; chmod 0777 "$WORK/mosquitto"
sed -e "s|^listener 1883 127.0.0.1$|listener $PORT 127.0.0.1|" \
    -e "s|^persistence_location .*|persistence_location $WORK/mosquitto/|" \
    "$REPO/packaging/mosquitto/bench.conf" > "$WORK/mosquitto.conf"
grep -q "^listener $PORT 127.0.0.1$" "$WORK/mosquitto.conf" || die "bench.conf has no 'listener 1883 127.0.0.1' line to move"
if [ "$NODELAY" = 1 ]; then echo "set_tcp_nodelay true" >> "$WORK/mosquitto.conf"; fi
mosquitto -c "$WORK/mosquitto.conf" > "$WORK/mosquitto.log" 2>&1 &
MOSQ_PID=$!
$PY wait-port "$PORT" 10 || { cat "$WORK/mosquitto.log" >&2; die "Mosquitto did not start"; }
say "mosquitto on 127.0.0.1:$PORT (pid $MOSQ_PID)$([ "$NODELAY" = 1 ] && echo ', set_tcp_nodelay true')"

# 3. Occurrences (~200 B JSON), the flow and a headless Node-RED.
$PY events "$EVENTS" "$RULES" "$WORK/full.jsonl"
$PY events "$PACED_EVENTS" "$RULES" "$WORK/paced.jsonl"
$PY events 5000 "$RULES" "$WORK/warm.jsonl"
$PY flow "$RULES" 1 "$PORT" "$WORK/nr/user/flows.json"
UI_PORT=$($PY free-port)
cat > "$WORK/nr/settings.js" <<EOF
// Headless: no editor, no admin API, no HTTP nodes, loopback only.
module.exports = {
    uiHost: "127.0.0.1", uiPort: $UI_PORT,
    flowFile: "flows.json", flowFilePretty: false, credentialSecret: false,
    httpAdminRoot: false, httpNodeRoot: false, disableEditor: true,
    diagnostics: { enabled: false, ui: false }, runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    functionExternalModules: false, functionTimeout: 0,
    logging: { console: { level: "info", metrics: false, audit: false } },
    contextStorage: { default: { module: "memory" } },
};
EOF

start_nodered() {
    node "$WORK/nr/node_modules/node-red/red.js" --settings "$WORK/nr/settings.js" \
        --userDir "$WORK/nr/user" flows.json > "$WORK/nr/nodered-$1.log" 2>&1 &
    NR_PID=$!
    for _ in $(seq 1 240); do
        grep -q "Connected to broker" "$WORK/nr/nodered-$1.log" && break
        kill -0 "$NR_PID" 2>/dev/null || { tail -20 "$WORK/nr/nodered-$1.log" >&2; die "Node-RED exited"; }
        sleep 0.5
    done
    grep -q "Connected to broker" "$WORK/nr/nodered-$1.log" \
        || { tail -20 "$WORK/nr/nodered-$1.log" >&2; die "Node-RED did not connect to the broker in 120 s"; }
    sleep 1
    say "node-red started (pid $NR_PID); warm-up: 5,000 occurrences"
    bounded 200 $PY run --label "nodered-$1-warmup" --mode warmup --system nodered --port "$PORT" \
        --out "$RESULTS" --quiet-wait "$QUIET_WAIT" --mqttbench "$MQTTBENCH" --file "$WORK/warm.jsonl" --timeout 120 \
        --app-pid "$NR_PID" > /dev/null
}
stop_nodered() {
    kill -TERM "$NR_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$NR_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NR_PID" 2>/dev/null || true
    NR_PID=""
}

raw() {      # raw LABEL MODE FILE RATE
    bounded 300 $PY run --label "$1" --mode "$2" --system broker --port "$PORT" --out "$RESULTS" --quiet-wait "$QUIET_WAIT" \
        --mqttbench "$MQTTBENCH" --file "$3" --rate "$4" --pub-topic bench/raw --sub-topic bench/raw \
        --timeout 200 > /dev/null
}
nodered() {  # nodered LABEL MODE FILE RATE
    bounded 300 $PY run --label "$1" --mode "$2" --system nodered --port "$PORT" --out "$RESULTS" --quiet-wait "$QUIET_WAIT" \
        --mqttbench "$MQTTBENCH" --file "$3" --rate "$4" --timeout 200 --app-pid "$NR_PID" > /dev/null
}
scriptd() {  # scriptd LABEL MODE EVENTS RATE (its temporary database in $WORK, removed on exit)
    TMPDIR="$WORK/tmp" bounded 600 $PY scriptd --label "$1" --mode "$2" --port "$PORT" --out "$RESULTS" --quiet-wait "$QUIET_WAIT" \
        --exe "$SCRIPTD" --scripts "$RULES" --events "$3" --rate "$4" > /dev/null
}
last() { $PY last "$RESULTS"; }

# 4. Full speed: broker ceiling, Node-RED and scriptd, interleaved so drift hits all alike.
T0=$(date +%s)
case " $LOADS " in *" full "*)
start_nodered full
for i in $(seq 1 "$RUNS"); do
    say "full speed, run $i/$RUNS: broker alone";  raw "broker-full" full "$WORK/full.jsonl" 0;        say "  $(last)"
    say "full speed, run $i/$RUNS: Node-RED";      nodered "nodered-full" full "$WORK/full.jsonl" 0;   say "  $(last)"
    say "full speed, run $i/$RUNS: scriptd";       scriptd "scriptd-full" full "$EVENTS" 0;            say "  $(last)"
done
stop_nodered;;
esac

# 5. Paced: a fresh Node-RED (its peak RSS is that of the paced load).
case " $LOADS " in *" paced "*)
start_nodered paced
for i in $(seq 1 "$RUNS"); do
    say "paced $RATE/s, run $i/$RUNS: broker alone"; raw "broker-paced" paced "$WORK/paced.jsonl" "$RATE";      say "  $(last)"
    say "paced $RATE/s, run $i/$RUNS: Node-RED";     nodered "nodered-paced" paced "$WORK/paced.jsonl" "$RATE"; say "  $(last)"
    say "paced $RATE/s, run $i/$RUNS: scriptd";      scriptd "scriptd-paced" paced "$PACED_EVENTS" "$RATE";      say "  $(last)"
done
stop_nodered;;
esac

# 6. The table.
echo
echo "Node-RED $NR_VERSION (function node, $RULES rules) vs scriptd ($RULES scripts, --match-fraction 1.0),"
echo "QoS 1 in and out, one Mosquitto ($MOSQ_VERSION, packaging/mosquitto/bench.conf$([ "$NODELAY" = 1 ] && echo ' + set_tcp_nodelay true'))," \
     "$(nproc) cores, $(date -u +%Y-%m-%d); $EVENTS occurrences per full-speed run, $PACED_EVENTS per paced run;" \
     "measured in $(( $(date +%s) - T0 )) s:"
echo
$PY table "$RESULTS" --rate "$RATE" --nodered-version "$NR_VERSION"
