#!/usr/bin/env python3
"""Real-browser test of the dashboard (run by scripts/browser-test).

Starts a 3-node cairn cluster on loopback (mutual TLS between nodes, a write
token), opens the dashboard served by the leader in Debian's headless
Chromium, driven over the Chrome DevTools Protocol, and checks what a person
would see: three members and the leader; after `kill -9` of the leader, the
new leader within seconds and a page that says its node died and reads from
another one; a mission map with waypoints, a pose trail and obstacles from
telemetry. Saves a screenshot (docs/dashboard.png by default).

With --hostile: one node, and markup in every string the page renders
(plan name, task kind, capabilities, sensor name, abort reason, the
rover.pose mode, events) and in the number fields of telemetry, both
published through the API (the node must refuse what does not fit a
topic's schema) and handed to the page's own handlers; the page must show
it all as text and contain no element the data tried to create.

Bounded: the whole run has a deadline; every process and temp dir it made is
removed on exit, also on failure.
"""

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import websocket  # python3-websocket (Debian)

DEADLINE_S = 180
TOKEN = "browser-test-" + os.urandom(6).hex()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CAIRN_BIN", os.path.join(ROOT, "target", "debug", "cairn"))
SHOT = os.environ.get("DASHBOARD_PNG", os.path.join(ROOT, "docs", "dashboard.png"))

PLAN = os.path.join(ROOT, "examples", "missions", "traverse.json")
WORLD = os.path.join(ROOT, "examples", "missions", "rover-world.json")

procs = {}   # node id -> Popen
chrome = None
work = tempfile.mkdtemp(prefix="cairn-browser-test.")


def log(msg):
    print(f"[browser-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg):
    raise SystemExit(f"browser-test FAILED: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, addr, path, body=None, token=True, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text.strip().startswith(("{", "[")) else text
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait(what, pred, timeout):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.1)
    fail(f"{what} not within {timeout}s (last: {last!r})")


# ---------------------------------------------------------------------------
# the cluster

raft = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
api = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
sim = f"127.0.0.1:{free_port()}"
world = []  # the `cairn sim run` process


def start_world():
    logf = open(os.path.join(work, "world.log"), "ab")
    world.append(subprocess.Popen([BIN, "sim", "run", "--sim-addr", sim, "--world", WORLD, "--status-interval-ms", "0"],
                                  stdout=subprocess.DEVNULL, stderr=logf))
    wait("the world up", lambda: subprocess.run([BIN, "sim", "status", "--sim-addr", sim], stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL).returncode == 0, 20)


def sim_fault(device, fault):
    subprocess.run([BIN, "sim", "fault", "--sim-addr", sim, device, fault], check=True, stdout=subprocess.DEVNULL)


def start_node(i, rover=True):
    logf = open(os.path.join(work, f"n{i}.log"), "ab")
    env = dict(os.environ, RUST_LOG="warn,cairn=info", CAIRN_API_TOKEN=TOKEN)
    args = [BIN, "node", "run", "--id", str(i), "--raft-addr", raft[i], "--api-addr", api[i],
            "--data-dir", os.path.join(work, f"n{i}")]
    if rover:
        args += ["--tls-dir", os.path.join(work, "certs"), "--sim", sim]
    procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=logf, env=env)
    wait(f"node {i} healthy", lambda: http("GET", api[i], "/healthz", token=False, timeout=1)[0] == 200, 20)


def status(i):
    code, st = http("GET", api[i], "/v1/status", timeout=1)
    return st if code == 200 else None


def agreed_leader(alive):
    seen = [status(i) for i in alive]
    leaders = {s["leader"] for s in seen if s}
    if len(leaders) == 1 and all(s and s["leader"] is not None for s in seen):
        return leaders.pop()
    return None


# ---------------------------------------------------------------------------
# the browser, over the DevTools protocol

class Browser:
    def __init__(self):
        global chrome
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            fail("chromium not found (scripts/setup installs it)")
        profile = os.path.join(work, "chromium")
        args = [exe, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--window-size=1440,1500", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
        chrome = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "chromium.log"), "ab"))
        port_file = os.path.join(profile, "DevToolsActivePort")
        wait("chromium's DevTools port", lambda: os.path.exists(port_file) and open(port_file).read().split("\n")[0], 30)
        port = open(port_file).read().split("\n")[0]
        targets = wait("a page target", lambda: [t for t in json.load(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/json/list", timeout=2)) if t["type"] == "page"], 10)
        self.ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=20, suppress_origin=True)
        self.ids = itertools.count(1)
        self.console = []
        self.call("Runtime.enable")
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1440, height=1500, deviceScaleFactor=1, mobile=False)

    def call(self, method, **params):
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(msg["params"]["exceptionDetails"].get("text", "exception"))
            if msg.get("id") == mid:
                if "error" in msg:
                    fail(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            fail(f"js {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_js(self, what, expr, timeout):
        return wait(what, lambda: self.js(expr), timeout)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def cleanup():
    for p in list(procs.values()) + world + ([chrome] if chrome else []):
        if p and p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(work, ignore_errors=True)


def on_alarm(*_):
    raise SystemExit(f"browser-test FAILED: did not finish within {DEADLINE_S}s")


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE_S)
    log(f"cluster CA and node certificates in {work}")
    for args in (["certs", "init"], ["certs", "issue", "1"], ["certs", "issue", "2"], ["certs", "issue", "3"]):
        subprocess.run([BIN, *args, "--dir", os.path.join(work, "certs")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start_world()
    for i in (1, 2, 3):
        start_node(i)
    members = {str(i): {"raft_addr": raft[i], "api_addr": api[i]} for i in (1, 2, 3)}
    code, body = http("POST", api[1], "/v1/cluster/init", {"members": members})
    if code != 201:
        fail(f"cluster init: {code} {body}")
    leader = wait("an agreed leader", lambda: agreed_leader([1, 2, 3]), 20)
    log(f"leader is node {leader}")

    log("the traverse, perception and control on the simulated rover")
    with open(PLAN) as f:
        code, body = http("PUT", api[leader], "/v1/mission/plan", json.load(f))
    if code != 200:
        fail(f"plan: {code} {body}")
    for task in ({"kind": "perceive", "required_capabilities": ["sensors"]},
                 {"kind": "navigate", "required_capabilities": ["drive"], "priority": 5},
                 {"kind": "sample-drill", "required_capabilities": ["drill"], "priority": 9}):
        code, body = http("POST", api[leader], "/v1/tasks", task)
        if code not in (200, 201):
            fail(f"task: {code} {body}")

    code, body = http("POST", api[leader], "/v1/params", {"name": "test.gain", "description": "a knob for this test",
                                                           "kind": {"Float": {"min": 0, "max": 1}}, "value": {"Float": 0.5}})
    if code not in (200, 201):
        fail(f"declare param: {code} {body}")

    log(f"opening the dashboard served by the leader, http://{api[leader]}/")
    b = Browser()
    b.call("Page.navigate", url=f"http://{api[leader]}/")
    b.wait_js("three members and the leader on the page",
              f"document.querySelectorAll('#members-table tbody tr').length === 3 && "
              f"document.querySelector('#leader').dataset.leader === '{leader}'", 20)
    b.wait_js("three registered nodes with node.stats",
              "document.querySelectorAll('#nodes-table tbody tr[data-node]').length === 3 && "
              "[...document.querySelectorAll('#nodes-table tbody tr')].every(r => r.children[4].textContent.endsWith('%'))", 20)
    b.wait_js("waypoints, obstacles and the rover's trail on the map, a waypoint reached",
              "document.querySelectorAll('#map circle.goal').length === 5 && "
              "document.querySelectorAll('#map circle.goal[data-status=Reached]').length >= 1 && "
              "!!document.querySelector('#map #trail') && !!document.querySelector('#map #truth')", 40)
    log("issue 22: fault tolerance, per-node process CPU, version and uptime, back-filled events")
    b.wait_js("the leader's fault tolerance: can lose 1 of 3 voters",
              "document.querySelector('#fault-tolerance').dataset.tolerance === '1' && "
              "document.querySelector('#fault-tolerance').textContent.includes('can lose 1 of 3')", 15)
    b.wait_js("each node's own CPU, its build and its uptime",
              "[...document.querySelectorAll('#nodes-table tbody tr[data-node]')].every(r => "
              "r.children[5].textContent.endsWith('%') && r.children[9].textContent.startsWith('0.') && "
              "r.children[9].textContent.includes('+') && /\\d s|min|h/.test(r.children[10].textContent))", 20)
    events = b.js("document.querySelector('#events').textContent")
    if 'plan "' not in events:
        fail(f"the plan, loaded before the page opened, is not in the back-filled events: {events[:300]!r}")

    log("drain: the page marks a draining node")
    other = next(i for i in (1, 2, 3) if i != leader)
    code, body = http("POST", api[leader], f"/v1/nodes/{other}/drain", {})
    if code != 200:
        fail(f"drain: {code} {body}")
    b.wait_js(f"node {other} shown draining",
              f"document.querySelector('#nodes-table tr[data-node=\"{other}\"]').dataset.draining === 'true' && "
              f"document.querySelector('#nodes-table tr[data-node=\"{other}\"]').textContent.includes('draining')", 10)
    code, body = http("POST", api[leader], f"/v1/nodes/{other}/undrain", {})
    if code != 200:
        fail(f"undrain: {code} {body}")
    b.wait_js(f"node {other} no longer draining",
              f"document.querySelector('#nodes-table tr[data-node=\"{other}\"]').dataset.draining === 'false'", 10)

    log("parameters and policies: shown, and a parameter changed from the page with the token")
    b.wait_js("the parameter and the default policies on the page",
              "!!document.querySelector('#params-table tr[data-param=\"test.gain\"]') && "
              "document.querySelector('#params-table tr[data-param=\"test.gain\"]').children[1].textContent === '0.5' && "
              "!!document.querySelector('#policies-table tr[data-sensor=\"imu\"][data-health=\"Failed\"]')", 10)
    b.js(f"S.token = {json.dumps(TOKEN)}; window.prompt = () => '0.75'; "
         "document.querySelector('#params-table button[data-param=\"test.gain\"]').click(); true")
    wait("test.gain = 0.75 in the cluster, set from the page",
         lambda: http("GET", api[leader], "/v1/params/test.gain")[1].get("value") == {"Float": 0.75}, 10)
    b.wait_js("the new value on the page",
              "document.querySelector('#params-table tr[data-param=\"test.gain\"]').children[1].textContent === '0.75'", 10)
    b.js("window.prompt = () => '7'; document.querySelector('#params-table button[data-param=\"test.gain\"]').click(); true")
    b.wait_js("an out-of-bounds value refused, with the reason in the banner",
              "!document.querySelector('#banner').hidden && document.querySelector('#banner').textContent.includes('test.gain not changed')", 10)
    if http("GET", api[leader], "/v1/params/test.gain")[1].get("value") != {"Float": 0.75}:
        fail("a refused value changed the parameter")

    log("a failure no policy covers: the page says so")
    code, body = http("PUT", api[leader], "/v1/sensors/thermal-cam", {"health": "Failed"})
    if code != 200:
        fail(f"sensor report: {code} {body}")
    b.wait_js("'no policy covers this failure' beside thermal-cam",
              "(() => { const r = document.querySelector('#sensors-table tr[data-sensor=\"thermal-cam\"]'); "
              "return !!r && r.textContent.includes('no policy covers this failure') })()", 10)

    log("failing the IMU in the world: perception reports it, the policy degrades the rover")
    sim_fault("imu", "failed")
    b.wait_js("the degraded mode with its cause", "document.querySelector('#mode').dataset.mode === 'GpsOnly' && "
              "document.querySelector('#causes').textContent.includes('imu')", 15)

    log(f"kill -9 the leader, node {leader}, which served the page")
    procs[leader].kill()
    procs[leader].wait()
    killed_at = time.monotonic()
    alive = [i for i in (1, 2, 3) if i != leader]
    new = b.wait_js("a new leader on the page",
                    f"(() => {{ const l = document.querySelector('#leader').dataset.leader; "
                    f"return l && l !== '{leader}' ? l : null }})()", 15)
    took = time.monotonic() - killed_at
    log(f"the page shows node {new} leading {took:.1f}s after the kill")
    if int(new) not in alive:
        fail(f"the page names node {new}, which is not alive")
    cur = b.wait_js("the page reading from a live node",
                    f"(() => {{ const c = document.querySelector('#conn').dataset.current; "
                    f"return c && c !== '{api[leader]}' ? c : null }})()", 10)
    if cur not in [api[i] for i in alive]:
        fail(f"the page reads from {cur}, not a live node")
    banner = b.js("document.querySelector('#banner').hidden ? '' : document.querySelector('#banner').textContent")
    if "served this page" not in banner:
        fail(f"the page does not say that its node died: banner {banner!r}")
    log(f"banner: {banner}")
    b.wait_js("the killed node shown unreachable",
              f"document.querySelector('#members-table tr[data-node=\"{leader}\"]').textContent.includes('no')", 10)
    b.wait_js("fault tolerance 0 with one voter of three down",
              "document.querySelector('#fault-tolerance').dataset.tolerance === '0'", 15)
    b.wait_js("the leader change in recent events",
              "document.querySelector('#events').textContent.includes('leader changed')", 15)
    time.sleep(3)  # a little more trail after the failover
    b.js("window.scrollTo(0, 0)")
    b.screenshot(SHOT)
    if b.console:
        fail(f"uncaught errors in the page: {b.console}")
    log(f"screenshot saved to {SHOT}")
    print("browser-test: 1 passed, 0 failed")


# ---------------------------------------------------------------------------
# --hostile: data must never become markup

def H(field):
    """Markup that would create elements #INJ-<field> (HTML) and #INJS-<field>
    (SVG) and set window.__pwned if any renderer parsed it; under 128 bytes
    (the longest name the state machine takes)."""
    return (f'"\'><img id="INJ-{field}" src=x onerror="window.__pwned=1">'
            f'<text id="INJS-{field}">FAKE E-STOP</text>')


def main_hostile():
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE_S)
    start_node(1, rover=False)
    code, body = http("POST", api[1], "/v1/cluster/init", {"members": {"1": {"raft_addr": raft[1], "api_addr": api[1]}}})
    if code != 201:
        fail(f"cluster init: {code} {body}")
    wait("a leader", lambda: agreed_leader([1]), 20)
    wait("node 1 registered", lambda: len(http("GET", api[1], "/v1/nodes")[1]) == 1, 20)

    log("hostile strings in every field the page renders, through the API")
    plan = {"name": H("plan"), "frame_id": "site", "goals": [{"kind": {"Waypoint": {"pose": {"position": [3.0, 1.0, 0.0], "heading_rad": 0.0}}},
                                          "tolerance": {"position_m": 0.5, "heading_rad": None}}]}
    problems = []  # reported together at the end, so one run shows every failure
    log("telemetry that does not fit its topic's schema is refused at publish")
    world = {"pose": {"x_m": H("x_m"), "y_m": 0.0, "heading_rad": 0.0},
             "obstacles": [{"x_m": H("obstacle"), "y_m": 1.0, "radius_m": H("radius_m")}],
             "fence": {"current": 1, "accepted": 0, "rejected": 0}, "collisions": 0, "estop": False}
    for topic, payload in (("sim.world", world), ("node.stats", {"cpu_percent": H("cpu")}),
                           ("rover.pose", {"x_m": H("pose_x"), "y_m": 0.0, "heading_rad": 0.0})):
        code, answer = http("POST", api[1], f"/v1/telemetry/{topic}", payload)
        if code != 400:
            problems.append(f"hostile {topic} was not refused at publish: {code} {answer}")

    writes = [
        ("PUT", "/v1/mission/plan", plan),
        ("POST", "/v1/tasks", {"kind": H("kind"), "required_capabilities": [H("cap")]}),
        ("PATCH", "/v1/nodes/1", {"capabilities": [H("capability")]}),
        ("PUT", "/v1/sensors/" + urllib.parse.quote(H("sensor"), safe=""), {"health": "Failed"}),
        ("POST", "/v1/telemetry/rover.pose", {"x_m": 1.0, "y_m": 1.0, "heading_rad": 0.0, "speed_mps": 0.1, "mode": H("mode")}),
        ("POST", "/v1/params", {"name": "hostile.text", "description": H("pdesc"),
                                "kind": {"String": {"max_len": 256}}, "value": {"String": H("pvalue")}}),
        ("PUT", "/v1/policies", {"sensor": H("policy"), "health": "Failed", "mode": "Stop", "speed_factor": 0.0}),
    ]
    for method, path, body in writes:
        code, answer = http(method, api[1], path, body)
        if code not in (200, 201, 202):
            fail(f"{method} {path}: {code} {answer}")
    log(f"opening the dashboard, http://{api[1]}/")
    b = Browser()
    b.call("Page.navigate", url=f"http://{api[1]}/")
    b.wait_js("the hostile task, plan, sensor and capability shown as text",
              "!!document.querySelector('#speed') && "
              "document.querySelector('#tasks').textContent.includes('INJ-kind') && "
              "document.querySelector('#plan-name').textContent.includes('INJ-plan') && "
              "document.querySelector('#sensors-table').textContent.includes('INJ-sensor') && "
              "document.querySelector('#speed').textContent.includes('INJ-mode')", 20)
    code, answer = http("POST", api[1], "/v1/mission/abort", {"reason": H("reason")})
    if code != 200:
        fail(f"abort: {code} {answer}")
    b.wait_js("the abort reason in recent events, as text",
              "document.querySelector('#events').textContent.includes('INJ-reason')", 15)
    log("hostile telemetry handed to the page's own handlers (as if a node had forwarded it)")
    hostile_world = json.dumps(world)
    b.js(f"""(() => {{
        onTelemetry("telemetry", {{topic: "sim.world", node_id: 1, seq: 1, payload: {hostile_world}}});
        onTelemetry("telemetry", {{topic: "rover.pose", node_id: 1, seq: 1,
            payload: {{x_m: {json.dumps(H("pose_x"))}, y_m: 0, heading_rad: {json.dumps(H("heading"))}, mode: "x"}}}});
        onTelemetry("telemetry", {{topic: "node.stats", node_id: 1, seq: 1, payload: {{cpu_percent: {json.dumps(H("cpu"))}}}}});
        event({json.dumps(H("event"))}, {json.dumps(H("event_kind"))});
        return true;
    }})()""")
    time.sleep(1.5)  # a poll and a refresh re-render everything
    injected = b.js("[...document.querySelectorAll('[id^=INJ]')].map(e => e.tagName + '#' + e.id)")
    pwned = b.js("window.__pwned === 1")
    if injected or pwned:
        problems.append(f"data became markup: injected elements {injected}, onerror ran: {pwned}")
    for sel, needle in (("#events", "INJ-event"), ("#nodes-table", "INJ-capability"),
                        ("#params-table", "INJ-pvalue"), ("#policies-table", "INJ-policy")):
        if needle not in b.js(f"document.querySelector('{sel}').textContent"):
            problems.append(f"{sel} does not show {needle} as text")
    if problems:
        fail("; ".join(problems))
    log("no element from the data; every hostile string shown as text")
    print("browser-test --hostile: 1 passed, 0 failed")


if __name__ == "__main__":
    try:
        main_hostile() if "--hostile" in sys.argv[1:] else main()
    except BaseException:
        for i in procs:
            path = os.path.join(work, f"n{i}.log")
            if os.path.exists(path):
                tail = open(path, errors="replace").read()[-2000:]
                print(f"--- node {i} log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        cleanup()
