#!/usr/bin/env python3
"""Runs sioload and measures the CPU of a whole server process tree over sioload's window.

sioload's --server-pid samples one process; a node:cluster server is a primary plus workers.
This wrapper samples utime+stime of PID and all its descendants every 20 ms (/proc/PID/stat,
children from /proc/PID/task/*/children), timestamps sioload's stderr progress lines, and cuts
the same window sioload measures:

  storm     from "receivers joined" to sioload's exit (- its 200 ms tail)   per `received`
  echo      from "connected" + warmup for duration_s                        per `acks`
  fanout    from "receivers joined" + warmup for duration_s                 per delivered msg
  recovery  from "dropping all" to exit (outage emits + reconnect storm)    (CPU % only)
  connect   from start to exit - settle                                    per connection

It adds tree_cpu_pct (100 = one core), tree_cpu_us_per_op, tree_rss_kb (sum of VmRSS at the
end) and tree_pids to sioload's JSON line, prints it and appends it to --json-out.

  treecpu.py --pid PID [--warmup-s 2] [--settle-ms 2000] [--json-out F] -- SIOLOAD ARGS...
"""
import argparse, json, os, subprocess, sys, threading, time

HZ = os.sysconf("SC_CLK_TCK")


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    f = s[s.rfind(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / HZ


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--settle-ms", type=float, default=2000)
    ap.add_argument("--json-out")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    samples, marks, stop = [], [], threading.Event()
    # Per-pid last value, so that a pid that vanishes keeps its CPU in the total.
    last = {}

    def sample():
        while True:
            pids = tree(a.pid)
            for p in pids:
                c = cpu_s(p)
                if c is not None:
                    last[p] = c
            samples.append((time.monotonic(), sum(last.values())))
            if stop.is_set():
                return
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t_start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    rd = threading.Thread(target=lambda: out.extend(proc.stdout.readlines()), daemon=True)
    rd.start()
    for line in proc.stderr:
        marks.append((time.monotonic(), line))
        sys.stderr.write(line)
    rc = proc.wait()
    t_end = time.monotonic()
    rd.join()
    stop.set()
    th.join()
    pids = tree(a.pid)
    rss = sum(rss_kb(p) for p in pids)
    line = next((l for l in out if l.startswith("{")), None)
    if rc != 0 or line is None:
        sys.exit(rc or 1)
    d = json.loads(line)

    def mark(text):
        return next((t for t, l in marks if text in l), None)

    def at(t):  # CPU seconds of the tree at time t (linear between samples)
        prev = samples[0]
        for s in samples:
            if s[0] >= t:
                if s[0] == prev[0]:
                    return s[1]
                return prev[1] + (s[1] - prev[1]) * (t - prev[0]) / (s[0] - prev[0])
            prev = s
        return samples[-1][1]

    sc, ops = d.get("scenario"), None
    if sc == "storm":
        t0, t1, ops = mark("receivers joined"), t_end - 0.2, d.get("received")
    elif sc == "echo":
        t0 = (mark("connected") or t_start) + a.warmup_s
        t1, ops = t0 + d["duration_s"], d.get("acks")
    elif sc == "fanout":
        t0 = (mark("receivers joined") or t_start) + a.warmup_s
        t1 = t0 + d["duration_s"]
        ops = d["delivered_per_s"] * d["duration_s"]
    elif sc == "recovery":
        t0, t1 = mark("dropping all"), t_end
    else:
        t0, t1, ops = t_start, t_end - a.settle_ms / 1000, d.get("connected")
    if t0 is not None and t1 > t0:
        used = at(t1) - at(t0)
        d["tree_cpu_s"] = round(used, 3)
        d["tree_cpu_pct"] = round(used / (t1 - t0) * 100, 1)
        if ops:
            d["tree_cpu_us_per_op"] = round(used * 1e6 / ops, 3)
    d["tree_rss_kb"] = rss
    d["tree_pids"] = len(pids)
    line = json.dumps(d)
    print(line)
    if a.json_out:
        with open(a.json_out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
