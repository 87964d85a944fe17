#!/usr/bin/env python3
"""Keeps the machine's filesystems thawed while CI runs, and says so if it ever had to.

A FIFREEZE aimed at the wrong path freezes the filesystem that holds it (usually the root):
every later write on the machine then blocks for good, and CI hangs until its time-out with
nothing to show. This watchdog tries FITHAW once a second on every block-backed filesystem
that is not on a loop device (loop filesystems are the driver's volumes, which it may freeze
on purpose for a moment). FITHAW succeeds only on a frozen filesystem, so a success is a
freeze found and ended: it is logged with the processes then stuck in D state.

  freeze-watchdog.py start  --state DIR [--owner PID] [--watch MOUNTPOINT]...
  freeze-watchdog.py status --state DIR   exit 1 if it thawed anything since its start,
                                          or is not running
  freeze-watchdog.py stop   --state DIR
  freeze-watchdog.py check [--watch M]...  one pass, no daemon: print a line per filesystem
                                          found frozen (and thawed) and per process stuck
                                          in D state (for ci/host-state.sh)

DIR (on tmpfs, e.g. from `mktemp -d /dev/shm/...`) holds this watchdog's pid and log, so
several watchdogs (another CI job's, a developer's own guard) never clash. The daemon ends by
itself when PID (default: the caller's parent shell) is gone. --watch adds a mount point that
is thawed even if it is a loop filesystem (for testing on a scratch filesystem).
"""
import argparse
import fcntl
import os
import signal
import sys
import time

FITHAW = 0xC0045878  # _IOWR('X', 120, int)
BLOCK_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs"}


def unescape(field):
    """Mount points in /proc/self/mounts escape space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def guarded(extra=()):
    """(mount point, source, fs type) of each non-loop block filesystem, once per source."""
    seen, out = set(), []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            src, mnt, fstype = line.split()[:3]
            mnt = unescape(mnt)
            if mnt in extra or (fstype in BLOCK_FS and not src.startswith("/dev/loop")):
                if src not in seen or mnt in extra:
                    seen.add(src)
                    out.append((mnt, src, fstype))
    return out


def thaw(mnt):
    """True if `mnt`'s filesystem was frozen (and is thawed now)."""
    try:
        fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, FITHAW, 0)
        return True
    except OSError:
        return False  # EINVAL: it was not frozen
    finally:
        os.close(fd)


def stat_of(pid):
    """(state, start time in clock ticks) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def d_state():
    """'pid comm: cmdline' of each process in uninterruptible sleep now."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (stat_of(pid) or ("",))[0] != "D":
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out.append(f"{pid} {comm}: {cmd[:160]}")
    return sorted(out, key=lambda line: int(line.split()[0]))


def stuck(samples=5, gap=0.2):
    """Processes in D state in every one of `samples`: stuck, not just waiting on a disk."""
    seen = None
    for n in range(samples):
        now = set(d_state())
        seen = now if seen is None else seen & now
        if n + 1 < samples:
            time.sleep(gap)
    return sorted(seen, key=lambda line: int(line.split()[0]))


class State:
    def __init__(self, path):
        self.dir = path
        self.pidfile = os.path.join(path, "pid")
        self.log_path = os.path.join(path, "log")

    def log(self, line):
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, (time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + line + "\n").encode())
        os.close(fd)

    def running(self):
        """The daemon's pid, if the pidfile names a live process with the recorded start time."""
        try:
            with open(self.pidfile) as f:
                pid, start = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            return None
        now = stat_of(pid)
        return pid if now and now[1] == start else None

    def lines(self):
        try:
            with open(self.log_path) as f:
                return [line.rstrip("\n") for line in f]
        except OSError:
            return []


def alive(pid, start):
    now = stat_of(pid)
    return now is not None and now[1] == start and now[0] not in "ZX"


def daemon(state, owner, owner_start, extra):
    watched = [m for m, _, _ in guarded(extra)]
    state.log(f"started pid {os.getpid()}, owner {owner}, watching {', '.join(watched) or 'nothing'}")
    signal.signal(signal.SIGTERM, lambda *_: (state.log("stopped"), os._exit(0)))
    while alive(owner, owner_start):
        # Taken before thawing: once thawed, the writers it blocked run on.
        stuck_now = d_state()
        for mnt, src, fstype in guarded(extra):
            if thaw(mnt):
                state.log(f"THAWED {mnt} ({src} {fstype}): it was frozen; processes in D state: "
                          + ("; ".join(stuck_now) or "none"))
        time.sleep(1)
    state.log(f"owner {owner} is gone; stopping")


def start(args):
    state = State(args.state)
    os.makedirs(state.dir, exist_ok=True)
    if state.running():
        print(f"freeze-watchdog: already running (pid {state.running()}) in {state.dir}")
        return 0
    owner = args.owner or os.getppid()
    owner_stat = stat_of(owner)
    if not owner_stat:
        print(f"freeze-watchdog: owner pid {owner} is not running", file=sys.stderr)
        return 1
    extra = tuple(os.path.realpath(m) for m in args.watch)
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        with open(state.pidfile + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {stat_of(os.getpid())[1]}\n")
        os.rename(state.pidfile + ".tmp", state.pidfile)
        try:
            daemon(state, owner, owner_stat[1], extra)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    deadline = time.monotonic() + 5
    while not state.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = state.running()
    if not pid:
        print(f"freeze-watchdog: did not start (see {state.log_path})", file=sys.stderr)
        return 1
    watched = ", ".join(m for m, _, _ in guarded(extra)) or "nothing"
    print(f"freeze-watchdog: pid {pid} keeps {watched} thawed; log {state.log_path}")
    return 0


def status(args):
    state = State(args.state)
    lines = state.lines()
    starts = [i for i, line in enumerate(lines) if " started pid " in line]
    # Thaws logged before this watchdog's last start belong to an earlier one.
    thaws = [line for line in lines[starts[-1] if starts else 0:] if " THAWED " in line]
    pid = state.running()
    for line in thaws:
        print(f"freeze-watchdog: {line}")
    if thaws:
        print(f"freeze-watchdog: FAILED: {len(thaws)} frozen filesystem(s) found and thawed "
              "during the run (processes stuck at the time are named above)")
    elif not pid:
        print(f"freeze-watchdog: FAILED: not running (log {state.log_path})")
    else:
        print(f"freeze-watchdog: pid {pid}: no filesystem was found frozen")
    return 1 if thaws or not pid else 0


def stop(args):
    state = State(args.state)
    pid = state.running()
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while state.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"freeze-watchdog: stopped pid {pid}")
    return 0


def check(args):
    # The time stamp makes each line differ between two reports, so a before/after diff fails.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stuck_now = stuck()  # before thawing, which would let the blocked writers go
    for mnt, src, fstype in guarded(tuple(os.path.realpath(m) for m in args.watch)):
        if thaw(mnt):
            print(f"FROZEN {mnt} ({src} {fstype}) was frozen; thawed at {stamp}")
    for line in stuck_now:
        print(f"D-STATE {line} (stuck at {stamp})")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "status", "stop"):
        p = sub.add_parser(name)
        p.add_argument("--state", required=True, help="this watchdog's directory (on tmpfs)")
        if name == "start":
            p.add_argument("--owner", type=int, help="stop when this pid is gone")
            p.add_argument("--watch", action="append", default=[], help="also thaw this mount")
    p = sub.add_parser("check")
    p.add_argument("--watch", action="append", default=[], help="also check this mount")
    args = parser.parse_args()
    return {"start": start, "status": status, "stop": stop, "check": check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
