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
     /parameter_events, published by every node's /cairn;

and, with an rclpy test_msgs/action/Fibonacci server at /fibonacci that
every node's `[[ros.actions]]` binds task kind `fibonacci` to,

  5. runs a cairn task of kind `fibonacci` through it: the goal's order is
     the parameter fibonacci.order, the server's feedback shows as the
     task's progress, the result as Succeeded;
  6. cancels such a task in cairn: the server gets cancel_goal for it and
     the task ends Cancelled;
  7. takeover trials (--takeover-trials N, default 3): kill -9 the node
     whose goal is executing; the new holder's goal (same task, newer epoch
     in the goal id) is accepted by the server and the orphaned goal is
     cancelled by the new holder; the time from kill -9 to the new goal's
     acceptance is printed with p50/p99 over the trials.

and

  8. lifecycle on takeover: a task of kind `managed` configures and
     activates the rclpy lifecycle node /n<holder>/managed; kill -9 of the
     holder has the new holder activate its own copy; a cairn cancel
     deactivates and cleans it up;

  9. subscribes late (transient-local) to /n1../n3/cairn/mode, /n2/cairn/max_speed
     and /n3/cairn/tasks and gets the current values at once;

 10. submitting from ROS 2: submits a `fibonacci` task through
     /n<follower>/cairn/submit_task (a replicated write forwarded to the
     leader), follows it on the latched /n1/cairn/tasks board (progress from
     the server's feedback, then Succeeded); bad submits (an empty kind, the
     state machine's refusal; a priority out of range and an unknown value,
     the bridge's) come back successful=false with the reason; a task
     cancelled through another node's cancel_task has its goal cancelled at
     the server and ends Cancelled (the nodes used are the longest-running
     ones: rclpy may still route to a killed node's service until its DDS
     lease ends);

 11. telemetry mirroring: a rover.pose published through node 1's HTTP API
     reaches an rclpy subscriber of /n2/telemetry/rover_pose (node 2's
     mirror); an rclpy publisher on /n1/ops_note reaches node 3's telemetry
     stream as ops.note from node 1;

 12. SIGSTOP of the node running a goal: its lease lapses, the new holder's
     goal (newer epoch) is accepted and the frozen node's goal cancelled;
     on SIGCONT the frozen node stands down (its log shows the goal
     cancelled or its result not reported, for the old epoch), sends no
     goal for the old epoch, and the task stays with the new holder.

Closes with "ros-interop: N passed, 0 failed", or fails loudly.
"""

import argparse
import faulthandler
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ARGS = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ARGS.add_argument("--takeover-trials", type=int, default=3,
                  help="kill -9 trials of the node running a goal (default 3)")
ARGS = ARGS.parse_args()
if not 1 <= ARGS.takeover_trials <= 50:
    raise SystemExit("--takeover-trials must be in 1..=50")
# Each takeover trial: a takeover (~3-5 s), a cancel, a restart, a catch-up.
DEADLINE_S = 330 + 40 * ARGS.takeover_trials
DOMAIN_ID = 42
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

import rclpy  # noqa: E402  (after the environment is set)
from rclpy.qos import qos_profile_parameter_events  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterEvent, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters  # noqa: E402
from rclpy.action import ActionServer, CancelResponse  # noqa: E402
from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import Node as LifecycleNode, TransitionCallbackReturn  # noqa: E402
from test_msgs.action import Fibonacci  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float64, String  # noqa: E402
from rcl_interfaces.srv import SetParametersAtomically  # noqa: E402

TOKEN = "ros-interop-" + os.urandom(6).hex()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CAIRN_BIN", os.path.join(ROOT, "target", "debug", "cairn"))
PARAM = "arm.grip_force_n"
FIB_KIND = "fibonacci"
MANAGED_KIND = "managed"
FIB_ORDER = "fibonacci.order"
# Seconds per Fibonacci step on the test server.
STEP_S = 0.1

procs = {}
# When each node was last (re)started: rclpy's DDS keeps a killed node's
# endpoints until their lease ends, so a service of a just-restarted node
# can look discovered while the request goes to the dead incarnation.
started = {}
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
    # Printed now: a hang in the cleanup must not hide it.
    print(f"ros-interop FAILED: {msg}", file=sys.stderr, flush=True)
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
                f'[ros]\nenabled = true\ndomain_id = {DOMAIN_ID}\nnamespace = "/n{i}"\n'
                f'[[ros.actions]]\nkind = "{FIB_KIND}"\ntype = "test_msgs/action/Fibonacci"\nname = "/fibonacci"\n'
                f'[[ros.lifecycle]]\nkind = "{MANAGED_KIND}"\nnode = "managed"\n'
                f'[[ros.telemetry]]\ntopic = "rover.pose"\n'
                f'[[ros.telemetry]]\ntopic = "ops.note"\nros_topic = "ops_note"\ndirection = "from_ros"\n')
    logf = open(os.path.join(work, f"n{i}.log"), "ab")
    env = dict(os.environ, RUST_LOG="warn,cairn=info,cairn_ros=info,cairn_agents=info", CAIRN_API_TOKEN=TOKEN)
    started[i] = time.monotonic()
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
    # Where it hung, for the CI log.
    faulthandler.dump_traceback(all_threads=True)
    raise SystemExit(f"ros-interop FAILED: did not finish within {DEADLINE_S}s")


def call(node, client, request, what, timeout=10):
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done() or future.result() is None:
        fail(f"{what}: no response within {timeout}s")
    return future.result()


def double(value):
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)


def parse_goal_id(uuid):
    """cairn's goal ids: CA 1E, a nonce, the task id (6 bytes), the epoch (7 bytes)."""
    b = bytes(uuid)
    if b[:2] != b"\xca\x1e":
        return None
    return {"task": int.from_bytes(b[3:9], "big"), "epoch": int.from_bytes(b[9:16], "big"), "nonce": b[2]}


class Managed(LifecycleNode):
    """A lifecycle node /n<i>/managed: the copy of a managed ROS 2 node on
    node i's side (each Pi's navigation_node, say)."""

    def __init__(self, i, server):
        super().__init__("managed", namespace=f"/n{i}")
        self.i = i
        self.server = server

    def _on(self, what):
        with self.server.lock:
            self.server.events.append({"t": time.monotonic(), "what": what, "node": self.i})
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state):
        return self._on("configure")

    def on_activate(self, state):
        return self._on("activate")

    def on_deactivate(self, state):
        return self._on("deactivate")

    def on_cleanup(self, state):
        return self._on("cleanup")


class FibServer:
    """test_msgs/action/Fibonacci at /fibonacci, spun in a thread of its own;
    records when each goal is accepted, asked to cancel, and how it ends."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []
        self.stopping = False
        self.node = rclpy.create_node("fibonacci_server")
        self.server = ActionServer(
            self.node, Fibonacci, "/fibonacci", execute_callback=self.execute,
            handle_accepted_callback=self.on_accepted, cancel_callback=self.on_cancel,
            callback_group=ReentrantCallbackGroup())
        self.executor = MultiThreadedExecutor(num_threads=8)
        self.executor.add_node(self.node)
        self.managed = {i: Managed(i, self) for i in (1, 2, 3)}
        for m in self.managed.values():
            self.executor.add_node(m)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def record(self, what, goal_handle):
        uuid = bytes(goal_handle.goal_id.uuid)
        with self.lock:
            self.events.append({"t": time.monotonic(), "what": what, "uuid": uuid.hex(),
                                "goal": parse_goal_id(uuid)})

    def on_accepted(self, goal_handle):
        self.record("accepted", goal_handle)
        goal_handle.execute()

    def on_cancel(self, goal_handle):
        self.record("cancel", goal_handle)
        return CancelResponse.ACCEPT

    def execute(self, goal_handle):
        seq = [0, 1]
        for _ in range(1, goal_handle.request.order):
            if self.stopping:
                goal_handle.abort()
                return Fibonacci.Result(sequence=seq)
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                self.record("canceled", goal_handle)
                return Fibonacci.Result(sequence=seq)
            seq.append((seq[-1] + seq[-2]) % 2**31)
            goal_handle.publish_feedback(Fibonacci.Feedback(sequence=seq))
            time.sleep(STEP_S)
        goal_handle.succeed()
        self.record("succeeded", goal_handle)
        return Fibonacci.Result(sequence=seq)

    def find(self, what, pred=lambda e: True):
        with self.lock:
            return next((e for e in self.events if e["what"] == what and pred(e)), None)

    def stop(self):
        # Running goals end at their next step; the nodes go with the process.
        self.stopping = True
        self.executor.shutdown(timeout_sec=2)


def alive():
    return [i for i, p in procs.items() if p.poll() is None]


def task(task_id):
    for i in alive():
        code, body = http("GET", api[i], f"/v1/tasks/{task_id}", timeout=2)
        if code == 200:
            return body
    return None


def submit_fib(kind=FIB_KIND):
    code, body = None, "no node alive"
    for i in alive():
        code, body = http("POST", api[i], "/v1/tasks", {"kind": kind})
        if code == 200:
            return body["response"]["TaskCreated"]["task_id"]
    fail(f"task submit: {code} {body}")


def set_order(order):
    i = alive()[0]
    code, body = http("PUT", api[i], f"/v1/params/{FIB_ORDER}", {"value": {"Int": order}})
    if code != 200:
        fail(f"PUT {FIB_ORDER}={order}: {code} {body}")


def cancel_task(task_id):
    i = alive()[0]
    code, body = http("POST", api[i], f"/v1/tasks/{task_id}/cancel")
    if code != 200:
        fail(f"cancel task {task_id}: {code} {body}")


def percentile(values, p):
    """Nearest rank."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def actions(server):
    log(f"task kind {FIB_KIND} bound to /fibonacci (test_msgs/action/Fibonacci) on every node")
    i = alive()[0]
    code, body = http("POST", api[i], "/v1/params", {
        "name": FIB_ORDER, "description": "order of the fibonacci goal", "kind": {"Int": {"min": 0, "max": 100000}},
        "value": {"Int": 30}})
    if code not in (200, 201):
        fail(f"declare {FIB_ORDER}: {code} {body}")

    # 5. A task through the action server: feedback as progress, result as success.
    task_id = submit_fib()
    accepted = wait("the server to accept the task's goal",
                    lambda: server.find("accepted", lambda e: e["goal"] and e["goal"]["task"] == task_id), 20)
    progress = set()
    notes = set()

    def done():
        t = task(task_id)
        if t and t["state"] == "Running" and 0 < t["progress_percent"] < 100:
            progress.add(t["progress_percent"])
            if t.get("feedback") and "Note" in t["feedback"]:
                notes.add(t["feedback"]["Note"])
        return t if t and t["state"] in ("Succeeded", "Failed", "Cancelled") else None
    t = wait(f"task {task_id} to end", done, 30)
    if t["state"] != "Succeeded" or t["progress_percent"] != 100:
        fail(f"task {task_id}: {t}")
    if not server.find("succeeded", lambda e: e["uuid"] == accepted["uuid"]):
        fail(f"task {task_id} succeeded in cairn, the server's goal did not")
    if len(progress) < 2 or not notes:
        fail(f"task {task_id}: progress seen while running {sorted(progress)}, notes {sorted(notes)}")
    ok(f"task {task_id} ran as goal {accepted['uuid']} (epoch {accepted['goal']['epoch']}): "
       f"progress {sorted(progress)} from the server's feedback (e.g. {sorted(notes)[-1]!r}), then Succeeded")

    # 6. A cairn cancel reaches the server as cancel_goal.
    set_order(100000)
    task_id = submit_fib()
    accepted = wait("the server to accept the goal",
                    lambda: server.find("accepted", lambda e: e["goal"] and e["goal"]["task"] == task_id), 20)
    wait("the server's feedback in the task", lambda: "fibonacci:" in str((task(task_id) or {}).get("feedback")), 10)
    t0 = time.monotonic()
    cancel_task(task_id)
    c = wait("cancel_goal at the server", lambda: server.find("cancel", lambda e: e["uuid"] == accepted["uuid"]), 10)
    t = wait(f"task {task_id} to end", lambda: (lambda t: t if t and t["state"] in (
        "Succeeded", "Failed", "Cancelled") else None)(task(task_id)), 10)
    if t["state"] != "Cancelled":
        fail(f"task {task_id} after a cancel: {t}")
    ok(f"cairn cancel of task {task_id}: cancel_goal at the server {1000 * (c['t'] - t0):.0f} ms later, task Cancelled")

    # 7. kill -9 of the node running the goal.
    times = []
    for trial in range(1, ARGS.takeover_trials + 1):
        task_id = submit_fib()
        old = wait("the server to accept the goal",
                   lambda: server.find("accepted", lambda e: e["goal"] and e["goal"]["task"] == task_id), 20)
        t = wait("the task's lease", lambda: (lambda t: t if t and t.get("lease") else None)(task(task_id)), 5)
        holder = t["lease"]["node_id"]
        if t["lease"]["epoch"] != old["goal"]["epoch"]:
            fail(f"goal epoch {old['goal']['epoch']} is not the lease's {t['lease']}")
        was_leader = agreed_leader() == holder
        procs[holder].kill()
        t0 = time.monotonic()
        procs[holder].wait()
        new = wait(f"a newer holder's goal for task {task_id}",
                   lambda: server.find("accepted", lambda e: e["goal"] and e["goal"]["task"] == task_id
                                       and e["goal"]["epoch"] > old["goal"]["epoch"]), 30)
        took = new["t"] - t0
        fenced = wait("the orphaned goal cancelled by the new holder",
                      lambda: server.find("cancel", lambda e: e["uuid"] == old["uuid"]), 10)
        times.append(took)
        log(f"trial {trial}: killed node {holder}{' (the leader)' if was_leader else ''} running task {task_id}; "
            f"new goal (epoch {new['goal']['epoch']}) accepted after {1000 * took:.0f} ms, "
            f"orphan cancelled after {1000 * (fenced['t'] - t0):.0f} ms")
        cancel_task(task_id)
        wait(f"task {task_id} cancelled", lambda: (task(task_id) or {}).get("state") == "Cancelled", 10)
        start_node(holder)
        wait("all three nodes agree on a leader", agreed_leader, 30)
    ms = [1000 * t for t in times]
    ok(f"takeover: kill -9 of the node running the goal -> new goal accepted by the server, "
       f"{len(ms)} trials: p50 {percentile(ms, 50):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
       f"min {min(ms):.0f} ms, max {max(ms):.0f} ms; the orphaned goal cancelled by the new holder each time")
    print("ros-interop takeover ms: " + json.dumps([round(m) for m in ms]), flush=True)


def lifecycle(server):
    """8. Lifecycle on takeover: task kind `managed` keeps /n<holder>/managed
    active; kill -9 of the holder -> the new holder activates its copy; a
    cairn cancel deactivates and cleans it up."""
    def event(what, node, after=0.0):
        return server.find(what, lambda e: e.get("node") == node and e["t"] >= after)
    t_submit = time.monotonic()
    task_id = submit_fib(MANAGED_KIND)
    t = wait("the managed task's lease", lambda: (lambda t: t if t and t.get("lease") else None)(task(task_id)), 20)
    holder = t["lease"]["node_id"]
    wait(f"/n{holder}/managed configured and activated",
         lambda: event("configure", holder, t_submit) and event("activate", holder, t_submit), 20)
    wait("the task's progress to say active", lambda: (task(task_id) or {}).get("progress_percent") == 50, 10)
    others = [i for i in (1, 2, 3) if i != holder]
    if any(event("activate", i, t_submit) for i in others):
        fail("a lifecycle node other than the holder's was activated")
    ok(f"task {task_id} ({MANAGED_KIND}) on node {holder}: /n{holder}/managed configured and activated")

    procs[holder].kill()
    t0 = time.monotonic()
    procs[holder].wait()
    j = wait("another node's copy activated",
             lambda: next((i for i in others if event("activate", i, t0)), None), 30)
    took = event("activate", j, t0)["t"] - t0
    t = wait("the task's new lease", lambda: (lambda t: t if t and t.get("lease") and
                                              t["lease"]["node_id"] == j else None)(task(task_id)), 10)
    ok(f"kill -9 of node {holder}: node {j} (epoch {t['lease']['epoch']}) activated /n{j}/managed "
       f"{1000 * took:.0f} ms later")

    t1 = time.monotonic()
    cancel_task(task_id)
    wait(f"/n{j}/managed deactivated and cleaned up",
         lambda: event("deactivate", j, t1) and event("cleanup", j, t1), 10)
    wait(f"task {task_id} cancelled", lambda: (task(task_id) or {}).get("state") == "Cancelled", 10)
    ok(f"cairn cancel: /n{j}/managed deactivated and cleaned up, task Cancelled")
    start_node(holder)
    wait("all three nodes agree on a leader", agreed_leader, 30)


def string_param(name, value):
    return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))


def int_param(name, value):
    return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value))


def submit_from_ros(node, server):
    """10. /cairn/submit_task and /cairn/cancel_task (rcl_interfaces/srv/
    SetParametersAtomically), followed on the latched task board."""
    leader = wait("an agreed leader", agreed_leader, 20)
    # The follower that has run longest (see `started`), and for cancels
    # the longest-running other node.
    follower = min((i for i in (1, 2, 3) if i != leader), key=lambda i: started[i])
    other = min((i for i in (1, 2, 3) if i != follower), key=lambda i: started[i])
    submit = node.create_client(SetParametersAtomically, f"/n{follower}/cairn/submit_task")
    cancel = node.create_client(SetParametersAtomically, f"/n{other}/cairn/cancel_task")
    for c in (submit, cancel):
        if not c.wait_for_service(timeout_sec=30):
            fail(f"service {c.srv_name} not discovered within 30s")
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         reliability=ReliabilityPolicy.RELIABLE)
    board = {}

    def on_board(m):
        for t in json.loads(m.data):
            board[t["id"]] = t
    sub = node.create_subscription(String, "/n1/cairn/tasks", on_board, latched)

    def submit_task(*values):
        return call(node, submit, SetParametersAtomically.Request(parameters=list(values)), "submit_task").result

    set_order(20)
    r = submit_task(string_param("kind", FIB_KIND), int_param("priority", 5))
    if not r.successful or not r.reason.startswith("task_id="):
        fail(f"submit_task through /n{follower}/cairn (follower; leader {leader}): {r.successful} {r.reason!r}")
    task_id = int(r.reason.split("=", 1)[1])
    accepted = wait("the server to accept the submitted task's goal",
                    lambda: server.find("accepted", lambda e: e["goal"] and e["goal"]["task"] == task_id), 20)
    seen = []
    end = time.monotonic() + 30
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
        t = board.get(task_id)
        if t and (not seen or seen[-1] != (t["state"], t["progress"])):
            seen.append((t["state"], t["progress"]))
        # The board names states in lower case (`running`, `succeeded`).
        if t and t["state"] in ("succeeded", "failed", "cancelled"):
            break
    states = [s for s, _ in seen]
    if not states or states[-1] != "succeeded" or not any(s == "running" and 0 < p < 100 for s, p in seen):
        fail(f"task {task_id} on /n1/cairn/tasks: {seen}")
    code, body = http("GET", api[leader], f"/v1/tasks/{task_id}")
    if code != 200 or body["spec"]["priority"] != 5:
        fail(f"task {task_id} through HTTP: {code} {body}")
    ok(f"submit_task on /n{follower}/cairn (leader is {leader}): task {task_id} (priority 5), goal {accepted['uuid']}; "
       f"followed on /n1/cairn/tasks: {seen}")

    for values, want in (([string_param("kind", "")], "kind"),
                         ([string_param("kind", FIB_KIND), int_param("priority", 300)], "priority 300"),
                         ([string_param("kind", FIB_KIND), string_param("colour", "red")], "colour")):
        r = submit_task(*values)
        if r.successful or want not in r.reason:
            fail(f"submit_task {[(v.name) for v in values]}: successful={r.successful} reason={r.reason!r}")
        ok(f"submit_task refused: {r.reason!r}")

    set_order(100000)
    r = submit_task(string_param("kind", FIB_KIND))
    if not r.successful:
        fail(f"submit_task: {r.reason!r}")
    task_id = int(r.reason.split("=", 1)[1])
    accepted = wait("the server to accept the goal",
                    lambda: server.find("accepted", lambda e: e["goal"] and e["goal"]["task"] == task_id), 20)
    r = call(node, cancel, SetParametersAtomically.Request(parameters=[int_param("task_id", task_id)]),
             "cancel_task").result
    if not r.successful:
        fail(f"cancel_task {task_id}: {r.reason!r}")
    wait("cancel_goal at the server", lambda: server.find("cancel", lambda e: e["uuid"] == accepted["uuid"]), 10)
    wait(f"task {task_id} cancelled", lambda: (task(task_id) or {}).get("state") == "Cancelled", 10)
    r = call(node, cancel, SetParametersAtomically.Request(parameters=[int_param("task_id", 999999)]),
             "cancel_task").result
    if r.successful or not r.reason:
        fail(f"cancel_task of no task: {r.successful} {r.reason!r}")
    ok(f"cancel_task {task_id} on /n{other}/cairn: cancel_goal at the server, task Cancelled; "
       f"an unknown task refused ({r.reason!r})")
    node.destroy_subscription(sub)


def telemetry_mirror(node):
    """11. rover.pose → /n2/telemetry/rover_pose; /n1/ops_note → ops.note."""
    got = []
    sub = node.create_subscription(String, "/n2/telemetry/rover_pose", lambda m: got.append(m.data), 10)
    pose = {"x_m": 1.5, "y_m": -2.0, "heading_rad": 0.25}
    end = time.monotonic() + 20
    msg = None
    while time.monotonic() < end and msg is None:
        code, body = http("POST", api[1], "/v1/telemetry/rover.pose", pose)
        if code != 202:
            fail(f"POST /v1/telemetry/rover.pose: {code} {body}")
        t = time.monotonic() + 0.3
        while time.monotonic() < t:
            rclpy.spin_once(node, timeout_sec=0.05)
        for text in got:
            m = json.loads(text)
            if m.get("topic") == "rover.pose" and m.get("node_id") == 1 and m.get("payload") == pose:
                msg = m
    if msg is None:
        fail(f"/n2/telemetry/rover_pose: nothing from node 1 within 20s (got {got[:3]})")
    ok(f"rover.pose from node 1's HTTP API on /n2/telemetry/rover_pose (node 2's mirror), seq {msg['seq']}")
    node.destroy_subscription(sub)

    pub = node.create_publisher(String, "/n1/ops_note", 10)
    note = {"text": "from rclpy", "token": TOKEN[-6:]}

    def seen_on_node3():
        pub.publish(String(data=json.dumps(note)))
        rclpy.spin_once(node, timeout_sec=0.05)
        req = urllib.request.Request(f"http://{api[3]}/v1/telemetry?topic=ops.note")
        req.add_header("authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(req, timeout=1) as r:
                for _ in range(20):
                    line = r.readline().decode()
                    if line.startswith("data:"):
                        m = json.loads(line[5:])
                        return m if m["node_id"] == 1 and m["payload"] == note else None
        except (OSError, ValueError):
            return None
        return None
    m = wait("ops.note from /n1/ops_note in node 3's telemetry", seen_on_node3, 20)
    ok(f"/n1/ops_note from rclpy in node 3's telemetry as ops.note from node 1 (seq {m['seq']})")
    node.destroy_publisher(pub)


def strip_ansi(text):
    out, i = [], 0
    while i < len(text):
        if text[i] == "\x1b":
            j = text.find("m", i)
            i = j + 1 if j >= 0 else len(text)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def sigstop(server):
    """12. SIGSTOP of the node running a goal: fenced on its side when it
    resumes, the goal re-sent from the new owner."""
    set_order(100000)
    task_id = submit_fib()
    old = wait("the server to accept the goal",
               lambda: server.find("accepted", lambda e: e["goal"] and e["goal"]["task"] == task_id), 20)
    t = wait("the task's lease", lambda: (lambda t: t if t and t.get("lease") else None)(task(task_id)), 5)
    holder, epoch = t["lease"]["node_id"], old["goal"]["epoch"]
    logpath = os.path.join(work, f"n{holder}.log")
    procs[holder].send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        new = wait(f"a newer holder's goal for task {task_id}",
                   lambda: server.find("accepted", lambda e: e["goal"] and e["goal"]["task"] == task_id
                                       and e["goal"]["epoch"] > epoch), 30)
        fenced = wait("the frozen node's goal cancelled by the new holder",
                      lambda: server.find("cancel", lambda e: e["uuid"] == old["uuid"]), 10)
        offset = os.path.getsize(logpath)
    finally:
        procs[holder].send_signal(signal.SIGCONT)
    t1 = time.monotonic()
    log(f"froze node {holder} (task {task_id}, epoch {epoch}); new goal (epoch {new['goal']['epoch']}) accepted "
        f"after {1000 * (new['t'] - t0):.0f} ms, the frozen goal cancelled after {1000 * (fenced['t'] - t0):.0f} ms; resumed")
    stood_down = ("ros 2 cancel_goal", "result not reported", "permit lost", "refused its report")

    def frozen_side():
        with open(logpath, errors="replace") as f:
            f.seek(offset)
            lines = strip_ansi(f.read()).splitlines()
        return next((l for l in lines if f"task={task_id}" in l and f"epoch={epoch}" in l
                     and any(w in l for w in stood_down)), None)
    line = wait(f"node {holder} to stand down for task {task_id} epoch {epoch} after SIGCONT", frozen_side, 20)
    time.sleep(2)
    late = server.find("accepted", lambda e: e["t"] >= t1 and e["goal"] and e["goal"]["task"] == task_id
                       and e["goal"]["epoch"] <= epoch)
    if late:
        fail(f"after SIGCONT node {holder} sent a goal for the old epoch: {late}")
    t = task(task_id)
    if not t or t["state"] != "Running" or not t.get("lease") or t["lease"]["epoch"] <= epoch:
        fail(f"after SIGCONT task {task_id} is {t}")
    ok(f"SIGSTOP of node {holder}: goal re-sent by node {t['lease']['node_id']} (epoch {t['lease']['epoch']}), "
       f"the frozen goal cancelled; on SIGCONT node {holder} stood down: {line.strip()[-160:]!r}; no old-epoch goal")
    cancel_task(task_id)
    wait(f"task {task_id} cancelled", lambda: (task(task_id) or {}).get("state") == "Cancelled", 10)
    wait("all three nodes agree on a leader", agreed_leader, 30)


def state_topics(node):
    """9. A subscriber that joins late gets the current mode, speed limit and
    task board at once (latched: transient-local)."""
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         reliability=ReliabilityPolicy.RELIABLE)
    got = {}
    for i in (1, 2, 3):
        node.create_subscription(String, f"/n{i}/cairn/mode", lambda m, i=i: got.setdefault(("mode", i), m.data),
                                 latched)
    node.create_subscription(Float64, "/n2/cairn/max_speed", lambda m: got.setdefault("speed", m.data), latched)
    node.create_subscription(String, "/n3/cairn/tasks", lambda m: got.setdefault("tasks", m.data), latched)
    t0 = time.monotonic()
    end = t0 + 15
    want = {("mode", 1), ("mode", 2), ("mode", 3), "speed", "tasks"}
    while time.monotonic() < end and not want <= set(got):
        rclpy.spin_once(node, timeout_sec=0.1)
    if not want <= set(got):
        fail(f"late subscriber: got only {sorted(map(str, got))} within 15s")
    modes = {got[("mode", i)] for i in (1, 2, 3)}
    if modes != {"normal"}:
        fail(f"late subscriber: modes {modes}")
    code, body = http("GET", api[alive()[0]], "/v1/params/drive.max_speed_mps")
    if code != 200 or body["value"] != {"Float": got["speed"]}:
        fail(f"/n2/cairn/max_speed {got['speed']} vs drive.max_speed_mps {body}")
    board = json.loads(got["tasks"])
    if not any(t["kind"] == FIB_KIND for t in board):
        fail(f"/n3/cairn/tasks: {got['tasks'][:300]}")
    ok(f"late subscriber ({time.monotonic() - t0:.1f}s): mode {modes.pop()!r} from /n1 /n2 /n3/cairn/mode, "
       f"max_speed {got['speed']} m/s, a board of {len(board)} tasks on /n3/cairn/tasks")


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

    server = FibServer()
    try:
        actions(server)
        lifecycle(server)
        submit_from_ros(node, server)
        sigstop(server)
    finally:
        server.stop()
    state_topics(node)
    telemetry_mirror(node)
    node.destroy_node()
    rclpy.shutdown()
    print(f"ros-interop: {passed} passed, 0 failed", flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
