"""Simulate what a power cut does to the processes and kernel state of the
daemon under test: kill every process in our cgroups, unmount everything
below the work directory, remove our cgroups. (Storage contents stay as the
kill left them: that is what is being tested.)"""
import os
import signal
import subprocess
import sys
import time


def clean(work, parent):
    roots = ["/sys/fs/cgroup"] + [os.path.join("/sys/fs/cgroup", d) for d in os.listdir("/sys/fs/cgroup")]
    for _ in range(3):
        for root in roots:
            base = os.path.join(root, parent)
            for dirpath, _dirs, files in os.walk(base):
                if "cgroup.procs" in files:
                    try:
                        for pid in open(os.path.join(dirpath, "cgroup.procs")).read().split():
                            try:
                                os.kill(int(pid), signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                    except OSError:
                        pass
        time.sleep(0.1)
    mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
    for m in sorted((m for m in mounts if m.startswith(work)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
    for root in roots:
        base = os.path.join(root, parent)
        for dirpath, _dirs, _files in sorted(os.walk(base), key=lambda t: -len(t[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


if __name__ == "__main__":
    clean(sys.argv[1], sys.argv[2])
