"""The loop of ci/powercut: update, kill at a random moment, check."""
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from powercut_clean import clean  # noqa: E402

bin_dir, work, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
storage = f"{work}/pvroot"
sock = f"{work}/ctrl.sock"
parent = "pvpowercut"


def request(method, path, body=b"", timeout=20):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    code = int(head.split()[1])
    try:
        return code, json.loads(rest)
    except ValueError:
        return code, rest


def start():
    log = open(f"{work}/daemon.log", "a")
    p = subprocess.Popen([f"{bin_dir}/pantavisor", "--storage", storage, "--ctrl-socket", sock,
                          "--run-dir", f"{work}/run", "--cgroup-parent", parent, "--config", f"{work}/pv.conf"],
                         stdout=log, stderr=log)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            cs = request("GET", "/containers", timeout=2)[1]
            if all(c["status"] == "STARTED" for c in cs):
                return p
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.05)
    raise RuntimeError("daemon did not bring the revision up")


def settled():
    """Wait until no update is under way (progress of the running revision
    is not INPROGRESS/TESTING) and every container runs."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            rev = request("GET", "/device-meta")[1]["pantavisor.revision"]
            prog = request("GET", f"/steps/{rev}/progress")[1].get("status")
            cs = request("GET", "/containers")[1]
            if prog not in ("INPROGRESS", "TESTING") and all(c["status"] == "STARTED" for c in cs):
                return rev
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            pass
        time.sleep(0.1)
    raise RuntimeError("never settled")


def verify(rev):
    """Every object of the running and committed revisions verifies."""
    env = dict(l.split("=", 1) for l in open(f"{storage}/boot/pv.env").read().split() if "=" in l)
    for r in {rev, env.get("pv_rev", "0")}:
        state = json.load(open(f"{storage}/trails/{r}/.pvr/json"))
        for key, value in state.items():
            if isinstance(value, str) and len(value) == 64 and key != "#spec":
                data = open(f"{storage}/objects/{value}", "rb").read()
                if hashlib.sha256(data).hexdigest() != value:
                    return f"object {value} ({key}) of {r} is corrupt"
    return None


def upload_part(part):
    state = json.load(open(f"{part}/json"))
    for key, value in state.items():
        if isinstance(value, str) and len(value) == 64:
            data = open(f"{part}/objects/{value}", "rb").read()
            code, body = request("PUT", f"/objects/{value}", data)
            if code != 200:
                raise RuntimeError(f"upload {key}: {code} {body}")
    return state


ok = bad = 0
landed = {"old": 0, "new": 0}
journal = f"{storage}/disks/perm/keeper/docker--data/journal"
daemon = start()
for i in range(iterations):
    version = "ab"[i % 2]
    name = f"pc{i}"
    before = open(journal).read() if os.path.exists(journal) else ""
    kill_after = random.uniform(0.0, 2.5)

    def update():
        try:
            part = upload_part(f"{work}/part-{version}")
            code, state = request("GET", f"/steps/{settled_rev}")
            for k in [k for k in state if k.startswith("app1/")]:
                del state[k]
            state.update({k: v for k, v in part.items() if k != "#spec"})
            request("PUT", f"/steps/locals/{name}", json.dumps(state).encode())
            request("POST", "/commands", json.dumps({"op": "LOCAL_RUN", "payload": f"locals/{name}"}).encode())
        except (OSError, RuntimeError, ValueError, IndexError):
            pass  # the daemon was killed under us

    settled_rev = settled()
    t = threading.Thread(target=update)
    t.start()
    time.sleep(kill_after)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    t.join()
    clean(work, parent)
    problem = None
    try:
        daemon = start()
        rev = settled()
        landed["new" if rev == f"locals/{name}" else "old"] += 1
        problem = verify(rev)
        after = open(journal).read()
        if not after.startswith(before) or after.count("boot") <= before.count("boot"):
            problem = problem or "permanent volume lost data"
    except (RuntimeError, OSError, ValueError) as e:
        problem = f"{e}"
        try:
            daemon.kill()
        except Exception:
            pass
        clean(work, parent)
        daemon = start()
    if problem:
        bad += 1
        print(f"iteration {i}: killed after {kill_after:.2f}s: {problem}", flush=True)
    else:
        ok += 1
    if (i + 1) % 10 == 0:
        print(f"{i + 1} iterations: ok={ok} bad={bad}", flush=True)

daemon.send_signal(signal.SIGTERM)
daemon.wait(timeout=60)
print(f"came back on the old revision {landed['old']} times, on the new one {landed['new']} times")
print(f"POWERCUT iterations={iterations} ok={ok} bad={bad}")
sys.exit(1 if bad else 0)
