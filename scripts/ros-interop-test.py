"""ROS 2 interop test (run by scripts/ros-interop-test, inside its own
network namespace): a real 3-node cairn cluster with `[ros] enabled`, each
node in its own ROS 2 namespace (/n1/cairn, /n2/cairn, /n3/cairn), and a
real rclpy node that

  1. lists and describes the parameters of /n1/cairn;
  2. sets a parameter through /n1/cairn/set_parameters and reads it back
     through node 2's HTTP API and through /n2/cairn/get_parameters;
  3. sets a value out of bounds: successful=false with the state machine's
     reason, and nothing changes;
  4. changes the parameter through node 3's HTTP API and sees the change on
     /parameter_events, published by every node's /cairn.

Closes with "ros-interop: N passed, 0 failed", or fails loudly.
"""

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
import urllib.request

DEADLINE_S = 240
DOMAIN_ID = 42
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

import rclpy  # noqa: E402  (after the environment is set)
from rclpy.qos import qos_profile_parameter_events  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterEvent, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters  # noqa: E402

TOKEN = "ros-interop-" + os.urandom(6).hex()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CAIRN_BIN", os.path.join(ROOT, "target", "debug", "cairn"))
PARAM = "arm.grip_force_n"

procs = {}
work = tempfile.mkdtemp(prefix="cairn-ros-interop.")
passed = 0


def log(msg):
    print(f"[ros-interop {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg):
    for i in procs:
        path = os.path.join(work, f"n{i}.log")
        if os.path.exists(path):
            with open(path) as f:
                tail = f.read()[-3000:]
            print(f"--- n{i}.log (tail)\n{tail}", file=sys.stderr)
    raise SystemExit(f"ros-interop FAILED: {msg}")


def ok(what):
    global passed
    passed += 1
    log(f"ok: {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, addr, path, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
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


raft = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
api = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}


def start_node(i):
    config = os.path.join(work, f"n{i}.toml")
    with open(config, "w") as f:
        f.write(f'id = {i}\nraft_addr = "{raft[i]}"\napi_addr = "{api[i]}"\n'
                f'data_dir = "{os.path.join(work, f"n{i}")}"\n'
                f'[ros]\nenabled = true\ndomain_id = {DOMAIN_ID}\nnamespace = "/n{i}"\n')
    logf = open(os.path.join(work, f"n{i}.log"), "ab")
    env = dict(os.environ, RUST_LOG="warn,cairn=info,cairn_ros=info", CAIRN_API_TOKEN=TOKEN)
    procs[i] = subprocess.Popen([BIN, "node", "run", "--config", config],
                                stdout=subprocess.DEVNULL, stderr=logf, env=env)
    wait(f"node {i} healthy", lambda: http("GET", api[i], "/healthz", timeout=1)[0] == 200, 20)


def agreed_leader():
    seen = []
    for i in (1, 2, 3):
        code, st = http("GET", api[i], "/v1/status", timeout=1)
        seen.append(st if code == 200 else None)
    leaders = {s["leader"] for s in seen if s}
    if len(leaders) == 1 and all(s and s["leader"] is not None for s in seen):
        return leaders.pop()
    return None


def http_value(i):
    code, body = http("GET", api[i], f"/v1/params/{PARAM}")
    return body["value"] if code == 200 else None


def cleanup():
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(work, ignore_errors=True)


def on_alarm(*_):
    raise SystemExit(f"ros-interop FAILED: did not finish within {DEADLINE_S}s")


def call(node, client, request, what, timeout=10):
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done() or future.result() is None:
        fail(f"{what}: no response within {timeout}s")
    return future.result()


def double(value):
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE_S)
    log("a 3-node cairn cluster with [ros] enabled, namespaces /n1 /n2 /n3")
    for i in (1, 2, 3):
        start_node(i)
    members = {str(i): {"raft_addr": raft[i], "api_addr": api[i]} for i in (1, 2, 3)}
    code, body = http("POST", api[1], "/v1/cluster/init", {"members": members})
    if code != 201:
        fail(f"cluster init: {code} {body}")
    leader = wait("an agreed leader", agreed_leader, 20)
    code, body = http("POST", api[leader], "/v1/params", {
        "name": PARAM, "description": "gripper force", "kind": {"Float": {"min": 0.0, "max": 40.0}},
        "value": {"Float": 10.0}})
    if code not in (200, 201):
        fail(f"declare {PARAM}: {code} {body}")
    log(f"leader is node {leader}; {PARAM} declared (float in 0..=40, 10.0)")

    rclpy.init()
    node = rclpy.create_node("cairn_interop_probe")
    events = []
    node.create_subscription(ParameterEvent, "/parameter_events", events.append, qos_profile_parameter_events)
    set1 = node.create_client(SetParameters, "/n1/cairn/set_parameters")
    list1 = node.create_client(ListParameters, "/n1/cairn/list_parameters")
    describe1 = node.create_client(DescribeParameters, "/n1/cairn/describe_parameters")
    get2 = node.create_client(GetParameters, "/n2/cairn/get_parameters")
    t0 = time.monotonic()
    for c in (set1, list1, describe1, get2):
        if not c.wait_for_service(timeout_sec=30):
            fail(f"service {c.srv_name} not discovered within 30s")
    log(f"services of /n1/cairn and /n2/cairn discovered in {time.monotonic() - t0:.1f}s")

    names = call(node, list1, ListParameters.Request(), "list_parameters").result.names
    if PARAM not in names or "drive.max_speed_mps" not in names:
        fail(f"list_parameters on /n1/cairn: {names}")
    ok(f"list_parameters on /n1/cairn: {names}")
    d = call(node, describe1, DescribeParameters.Request(names=[PARAM]), "describe_parameters").descriptors[0]
    if d.type != ParameterType.PARAMETER_DOUBLE or not d.floating_point_range \
            or d.floating_point_range[0].to_value != 40.0 or d.description != "gripper force":
        fail(f"describe_parameters: {d}")
    ok(f"describe_parameters: double, range {d.floating_point_range[0].from_value}..{d.floating_point_range[0].to_value}")

    log("set through /n1/cairn, read back through node 2 (HTTP and ROS)")
    r = call(node, set1, SetParameters.Request(parameters=[Parameter(name=PARAM, value=double(12.5))]),
             "set_parameters").results[0]
    if not r.successful:
        fail(f"set_parameters {PARAM}=12.5 refused: {r.reason!r}")
    wait("node 2's HTTP API to show 12.5", lambda: http_value(2) == {"Float": 12.5}, 10)
    ok("set_parameters 12.5 on /n1/cairn, read back through node 2's HTTP API")

    def ros_value():
        v = call(node, get2, GetParameters.Request(names=[PARAM]), "get_parameters").values[0]
        return v.type == ParameterType.PARAMETER_DOUBLE and v.double_value == 12.5
    wait("/n2/cairn/get_parameters to answer 12.5", ros_value, 10)
    ok("get_parameters on /n2/cairn answers 12.5")

    log("a value out of bounds is refused and changes nothing")
    r = call(node, set1, SetParameters.Request(parameters=[Parameter(name=PARAM, value=double(99.0))]),
             "set_parameters").results[0]
    if r.successful or not r.reason:
        fail(f"set_parameters {PARAM}=99.0: successful={r.successful} reason={r.reason!r}")
    time.sleep(0.5)
    if http_value(3) != {"Float": 12.5}:
        fail(f"after the refusal node 3 shows {http_value(3)}")
    ok(f"set_parameters 99.0 refused: successful=false, reason {r.reason!r}; value still 12.5")

    log("a change through node 3's HTTP API appears on /parameter_events")
    events.clear()
    code, body = http("PUT", api[3], f"/v1/params/{PARAM}", {"value": {"Float": 7.0}})
    if code != 200:
        fail(f"PUT {PARAM}: {code} {body}")
    seen_from = set()
    end = time.monotonic() + 15
    while time.monotonic() < end and len(seen_from) < 3:
        rclpy.spin_once(node, timeout_sec=0.1)
        for e in events:
            for p in e.changed_parameters:
                if p.name == PARAM and p.value.double_value == 7.0:
                    seen_from.add(e.node)
    if seen_from != {"/n1/cairn", "/n2/cairn", "/n3/cairn"}:
        fail(f"/parameter_events: the change seen from {sorted(seen_from)} only ({len(events)} events)")
    ok(f"/parameter_events: the HTTP change seen from {sorted(seen_from)}")

    node.destroy_node()
    rclpy.shutdown()
    print(f"ros-interop: {passed} passed, 0 failed", flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
