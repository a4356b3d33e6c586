#!/usr/bin/env python3
"""Helpers of bench/peer/run.sh (loopback only, every step bounded).

  peer.py events N NCAMS OUT           occurrences for Node-RED and the raw ceiling (~200 B JSON)
  peer.py flow NRULES QOS PORT OUT     Node-RED flows.json: mqtt in -> json -> function (NRULES
                                       rules) -> mqtt out
  peer.py free-port                    a free TCP port on 127.0.0.1
  peer.py wait-port PORT SECONDS       exits 0 once 127.0.0.1:PORT accepts connections
  peer.py run ...                      one publisher -> (broker | Node-RED) -> subscriber run,
                                       appended to the results file as one JSON line
  peer.py scriptd ...                  one `scriptd bench pipeline --json` run, appended likewise
  peer.py last RESULTS                 one line on the last result
  peer.py table RESULTS                the comparison table (Markdown)
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


# --- occurrences and flow ------------------------------------------------------------------

def cmd_events(a):
    """N occurrences; camera_id cycles over cam-0000..cam-(NCAMS-1); all are 'motion' on a
    Wednesday 10:xx at +03:00, i.e. inside every rule's weekly window."""
    with open(a.out, "w") as f:
        for i in range(a.n):
            s = i % 3600
            ev = {
                "event_id": "motion",
                "camera_id": "cam-%04d" % (i % a.ncams),
                "timestamp": "2025-01-15T10:%02d:%02d.%03d+03:00" % (s // 60, s % 60, i % 1000),
                "seq": i,
                "object": "person",
                "confidence": 0.93,
                "bbox": [0.12, 0.34, 0.56, 0.78],
                "zone": "entrance-north",
                "site": "site-42",
            }
            f.write(json.dumps(ev, separators=(",", ":")) + "\n")


FUNC_INIT = """
// The rules as a Node-RED user would keep them (here generated; normally a file or the
// global context). Weekly windows are minutes of the day in the rule's local time;
// offsetMin is the rule's UTC offset.
const N = %d;
const rules = [];
const wk = [[480, 720], [780, 1080]];              // 08:00-12:00, break, 13:00-18:00
for (let i = 0; i < N; i++) {
    rules.push({
        id: 'r' + i, user: i + 1, event: 'motion',
        cameras: ['cam-' + String(i).padStart(4, '0')],
        offsetMin: 180,                              // UTC+03:00
        week: [null, wk, wk, wk, wk, wk, [[600, 840]]],  // Sun..Sat
        absolute: [{ from: Date.parse('2024-12-24T00:00:00+03:00'), to: Date.parse('2024-12-26T23:59:59+03:00') }],
        text: 'Motion on camera ' + i
    });
}
context.set('rules', rules);
"""

FUNC = """
const ev = msg.payload;
const rules = context.get('rules');
const t = Date.parse(ev.timestamp);
function active(r) {
    for (const a of r.absolute) if (t >= a.from && t < a.to) return true;
    const d = new Date(t + r.offsetMin * 60000);
    const day = r.week[d.getUTCDay()];
    if (!day) return false;
    const m = d.getUTCHours() * 60 + d.getUTCMinutes();
    for (const w of day) if (m >= w[0] && m < w[1]) return true;
    return false;
}
const out = [];
for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (r.event !== ev.event_id) continue;
    if (r.cameras.indexOf(ev.camera_id) === -1) continue;
    if (!active(r)) continue;
    out.push({ topic: 'reactions/user/' + r.user, payload: { rule: r.id, user: r.user, text: r.text, event: ev } });
}
return out.length ? [out] : null;
"""


def cmd_flow(a):
    """Rule i matches event 'motion' on camera cam-%04d % i: every occurrence of `events`
    with NCAMS = NRULES matches exactly one rule, i.e. one QoS `qos` publish."""
    q = str(a.qos)
    nodes = [
        {"id": "broker1", "type": "mqtt-broker", "name": "bench", "broker": "127.0.0.1",
         "port": str(a.port), "clientid": "nodered-bench", "autoConnect": True, "usetls": False,
         "protocolVersion": "4", "keepalive": "60", "cleansession": True, "autoUnsubscribe": True,
         "birthTopic": "", "birthQos": "0", "birthPayload": "", "birthMsg": {},
         "closeTopic": "", "closeQos": "0", "closePayload": "", "closeMsg": {},
         "willTopic": "", "willQos": "0", "willPayload": "", "willMsg": {}, "userProps": "",
         "sessionExpiry": ""},
        {"id": "t1", "type": "tab", "label": f"{a.nrules} rules, function node", "disabled": False,
         "info": ""},
        {"id": "in", "type": "mqtt in", "z": "t1", "name": "", "topic": "analytics/events", "qos": q,
         "datatype": "utf8", "broker": "broker1", "nl": False, "rap": True, "rh": 0, "inputs": 0,
         "x": 100, "y": 100, "wires": [["js"]]},
        {"id": "js", "type": "json", "z": "t1", "name": "", "property": "payload", "action": "obj",
         "pretty": False, "x": 250, "y": 100, "wires": [["fn"]]},
        {"id": "fn", "type": "function", "z": "t1", "name": f"rules x{a.nrules}", "func": FUNC,
         "outputs": 1, "timeout": 0, "noerr": 0, "initialize": FUNC_INIT % a.nrules,
         "finalize": "", "libs": [], "x": 450, "y": 100, "wires": [["out"]]},
        {"id": "out", "type": "mqtt out", "z": "t1", "name": "", "topic": "", "qos": q,
         "retain": "false", "respTopic": "", "contentType": "", "userProps": "", "correl": "",
         "expiry": "", "broker": "broker1", "x": 650, "y": 100, "wires": []},
    ]
    with open(a.out, "w") as f:
        json.dump(nodes, f)


def cmd_free_port(_a):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_wait_port(a):
    deadline = time.time() + a.seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", a.port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on 127.0.0.1:{a.port} after {a.seconds} s")


# --- measuring -----------------------------------------------------------------------------

def cpu_s(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def mem_mb(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def busy_pct(window=1.0):
    def sample():
        v = list(map(int, open("/proc/stat").readline().split()[1:]))
        return sum(v), v[3] + v[4]
    a = sample()
    time.sleep(window)
    b = sample()
    return round(100 * (1 - (b[1] - a[1]) / max(1, b[0] - a[0])), 1)


def wait_quiet(limit_s, threshold):
    """Waits (at most limit_s) until the machine is below threshold % busy; returns the last
    sample, which the result records."""
    t0 = time.time()
    b = busy_pct()
    while b >= threshold and time.time() - t0 < limit_s:
        print(f"  machine {b:.0f} % busy before the run; waiting (at most {limit_s:.0f} s)",
              file=sys.stderr, flush=True)
        time.sleep(5)
        b = busy_pct()
    return b


def append(path, rec):
    line = json.dumps(rec)
    print(line, flush=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def cmd_run(a):
    """mqttbench sub (reactions/# or the raw topic) + mqttbench pub (the file) on 127.0.0.1.
    Throughput = received / (publisher start -> last arrival); CPU and peak RSS of --app-pid
    over the run (Node-RED), latency from the publish stamp carried in the payload."""
    n = sum(1 for line in open(a.file) if line.startswith("{"))
    bg = wait_quiet(a.quiet_wait, a.quiet_threshold)
    c0 = cpu_s(a.app_pid) if a.app_pid else None
    sub = subprocess.Popen([a.mqttbench, "sub", "--port", str(a.port), "--topic", a.sub_topic,
                            "--qos", str(a.qos), "--count", str(n), "--timeout", str(a.timeout)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if sub.stderr.readline().strip() != "sub ready":
        sub.kill()
        sys.exit("mqttbench sub did not start")
    time.sleep(0.5)
    pub = subprocess.Popen([a.mqttbench, "pub", "--port", str(a.port), "--topic", a.pub_topic,
                            "--qos", str(a.qos), "--file", a.file, "--rate", str(a.rate),
                            "--inflight", "1000", "--timeout", str(a.timeout)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pub_out, pub_err = pub.communicate(timeout=a.timeout + 20)
        sub_out, _ = sub.communicate(timeout=a.timeout + 20)
    except subprocess.TimeoutExpired:
        pub.kill()
        sub.kill()
        sys.exit(f"{a.label}: publisher or subscriber did not finish in time")
    c1 = cpu_s(a.app_pid) if a.app_pid else None
    try:
        P = json.loads(pub_out.strip().splitlines()[-1])
        S = json.loads(sub_out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.exit(f"{a.label}: no result from mqttbench (pub stderr: {pub_err[-500:]})")
    span = (S["last_us"] - P["t0_us"]) / 1e6 if S["received"] else 0.0
    rec = {
        "label": a.label, "system": a.system, "mode": a.mode, "sent": P["sent"], "expected": n,
        "delivered": S["received"], "reactions_per_event": 1.0,
        "events_per_s": round(S["received"] / span) if span > 0 else 0,
        "p50_ms": S["lat_p50_us"] / 1000, "p99_ms": S["lat_p99_us"] / 1000,
        "max_ms": S["lat_max_us"] / 1000,
        "cpu_us_per_event": (round((c1 - c0) * 1e6 / max(1, P["sent"]), 1)
                             if c0 is not None and c1 is not None else None),
        "rss_peak_mb": mem_mb(a.app_pid, "VmHWM:") if a.app_pid else None,
        "busy_before_pct": bg,
    }
    append(a.out, rec)


def cmd_scriptd(a):
    """One `scriptd bench pipeline` run against the broker (the daemon is its child process;
    the caller bounds this with `timeout`, which ends the whole process group)."""
    bg = wait_quiet(a.quiet_wait, a.quiet_threshold)
    cmd = [a.exe, "bench", "pipeline", "--broker", f"127.0.0.1:{a.port}",
           "--scripts", str(a.scripts), "--match-fraction", "1.0", "--events", str(a.events),
           "--qos", "1", "--json"]
    if a.rate > 0:
        cmd += ["--rate", str(a.rate)]
    print("  " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        j = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.exit(f"{a.label}: scriptd bench pipeline failed (exit {r.returncode}): "
                 f"{r.stderr.strip()[-1500:]}")
    exp = j["expected_pushes"]
    rec = {
        "label": a.label, "system": "scriptd", "mode": a.mode, "sent": j["events"],
        "expected": exp, "delivered": exp - j["lost"], "duplicates": j["duplicates"],
        "reactions_per_event": round(exp / max(1, j["events"]), 3),
        "events_per_s": round(j["occurrences_per_s"]),
        "p50_ms": j["latency_ms"]["p50"], "p99_ms": j["latency_ms"]["p99"],
        "max_ms": j["latency_ms"]["max"],
        "cpu_us_per_event": round(j["daemon_cpu_us_per_event"], 1),
        "rss_peak_mb": round(j["daemon_rss_mb"], 1),
        "own_ceiling_per_s": round(j["ceiling_per_s"]),
        "own_ratio_to_ceiling": round(j["ratio_to_ceiling"], 3),
        "own_ceiling_p50_ms": j["ceiling_latency_ms"]["p50"],
        "own_ceiling_p99_ms": j["ceiling_latency_ms"]["p99"],
        "busy_before_pct": bg, "exit": r.returncode,
    }
    append(a.out, rec)


# --- the table -----------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def cmd_table(a):
    rows = [json.loads(line) for line in open(a.results) if line.strip()]
    rows = [r for r in rows if not r["label"].endswith("warmup")]
    busy_limit = a.busy_mark
    ceiling = med([r["events_per_s"] for r in rows if r["system"] == "broker" and r["mode"] == "full"])
    names = {"broker": "broker alone (publisher → subscriber)",
             "nodered": f"Node-RED {a.nodered_version}, function node",
             "scriptd": "scriptd (daemon, SQLite outbox)"}
    print("| load | system | runs | delivered / expected | reactions per event | events/s median (min–max) "
          "| of broker ceiling | CPU µs per event | p50 ms | p99 ms | peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    marked = False
    for mode, mode_name in (("full", "full speed"), ("paced", f"paced {a.rate:,}/s")):
        stats = {}
        for system in ("broker", "nodered", "scriptd"):
            rs = [r for r in rows if r["system"] == system and r["mode"] == mode]
            if not rs:
                continue
            eps = [r["events_per_s"] for r in rs]
            s = {
                "eps": med(eps), "cpu": med([r["cpu_us_per_event"] for r in rs]),
                "p50": med([r["p50_ms"] for r in rs]), "p99": med([r["p99_ms"] for r in rs]),
                "rss": max([r["rss_peak_mb"] for r in rs if r["rss_peak_mb"] is not None], default=None),
            }
            stats[system] = s
            mark = ""
            if any(r.get("busy_before_pct", 0) >= busy_limit for r in rs):
                mark, marked = " *", True
            delivered = f"{sum(r['delivered'] for r in rs):,} / {sum(r['expected'] for r in rs):,}"
            rpe = med([r["reactions_per_event"] for r in rs])
            frac = (f"{s['eps'] / ceiling:.2f}" if mode == "full" and ceiling and system != "broker"
                    else ("1.00" if mode == "full" and system == "broker" else "–"))
            print(f"| {mode_name} | {names[system]}{mark} | {len(rs)} | {delivered} | "
                  f"{rpe:.2f} | {fmt(s['eps'])} ({fmt(min(eps))}–{fmt(max(eps))}) | {frac} | "
                  f"{fmt(s['cpu'], 0)} | {fmt(s['p50'], 2)} | {fmt(s['p99'], 2)} | {fmt(s['rss'], 0)} |")
        if "nodered" in stats and "scriptd" in stats:
            n, d = stats["scriptd"], stats["nodered"]
            print(f"| {mode_name} | **scriptd / Node-RED** | | | | {ratio(n['eps'], d['eps'])} | | "
                  f"{ratio(n['cpu'], d['cpu'])} | {ratio(n['p50'], d['p50'])} | "
                  f"{ratio(n['p99'], d['p99'])} | {ratio(n['rss'], d['rss'])} |")
    own = [r for r in rows if r["system"] == "scriptd"]
    notes = []
    full_own = [r for r in own if r["mode"] == "full"]
    if full_own:
        notes.append("scriptd's own in-run ceiling (its rumqttc publisher and subscriber, "
                     f"full speed): median {fmt(med([r['own_ceiling_per_s'] for r in full_own]))}/s, "
                     f"scriptd at {med([r['own_ratio_to_ceiling'] for r in full_own]):.2f} of it")
    paced_own = [r for r in own if r["mode"] == "paced"]
    if paced_own:
        notes.append("broker alone at the paced rate in scriptd's runs: p50 "
                     f"{med([r['own_ceiling_p50_ms'] for r in paced_own]):.2f} ms, p99 "
                     f"{med([r['own_ceiling_p99_ms'] for r in paced_own]):.2f} ms")
    dups = sum(r.get("duplicates", 0) for r in own)
    notes.append(f"scriptd duplicates: {dups}")
    busy = [r["busy_before_pct"] for r in rows if r.get("busy_before_pct") is not None]
    if busy:
        notes.append(f"machine busy just before the runs (both cores, other work): median "
                     f"{med(busy):.0f} %, {min(busy):.0f}–{max(busy):.0f} %")
    if marked:
        notes.append(f"* at least one run started with the machine ≥ {busy_limit:.0f} % busy")
    print()
    for line in notes:
        print(f"- {line}")


def cmd_last(a):
    r = [json.loads(line) for line in open(a.results) if line.strip()][-1]
    print(f"{r['events_per_s']:>7,}/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
          f"CPU {fmt(r['cpu_us_per_event'])} µs/event  delivered {r['delivered']:,}/{r['expected']:,}")


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("events"); p.add_argument("n", type=int); p.add_argument("ncams", type=int)
    p.add_argument("out"); p.set_defaults(f=cmd_events)
    p = sp.add_parser("flow"); p.add_argument("nrules", type=int); p.add_argument("qos", type=int)
    p.add_argument("port", type=int); p.add_argument("out"); p.set_defaults(f=cmd_flow)
    p = sp.add_parser("free-port"); p.set_defaults(f=cmd_free_port)
    p = sp.add_parser("wait-port"); p.add_argument("port", type=int)
    p.add_argument("seconds", type=float); p.set_defaults(f=cmd_wait_port)
    for name, fn in (("run", cmd_run), ("scriptd", cmd_scriptd)):
        p = sp.add_parser(name)
        p.add_argument("--label", required=True); p.add_argument("--mode", required=True,
                                                                choices=["full", "paced", "warmup"])
        p.add_argument("--port", type=int, required=True); p.add_argument("--out", required=True)
        p.add_argument("--rate", type=float, default=0)
        p.add_argument("--quiet-wait", type=float, default=60)
        p.add_argument("--quiet-threshold", type=float, default=25)
        p.set_defaults(f=fn)
        if name == "run":
            p.add_argument("--system", required=True, choices=["broker", "nodered"])
            p.add_argument("--mqttbench", required=True); p.add_argument("--file", required=True)
            p.add_argument("--qos", type=int, default=1)
            p.add_argument("--pub-topic", default="analytics/events")
            p.add_argument("--sub-topic", default="reactions/#")
            p.add_argument("--timeout", type=float, default=120)
            p.add_argument("--app-pid", default="")
        else:
            p.add_argument("--exe", required=True); p.add_argument("--scripts", type=int, default=1000)
            p.add_argument("--events", type=int, required=True)
    p = sp.add_parser("last"); p.add_argument("results"); p.set_defaults(f=cmd_last)
    p = sp.add_parser("table"); p.add_argument("results")
    p.add_argument("--rate", type=int, default=1000); p.add_argument("--nodered-version", default="4.1")
    p.add_argument("--busy-mark", type=float, default=25); p.set_defaults(f=cmd_table)
    a = ap.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
