"""reap.py COMMAND...: run a forking peer (Exim, OpenSMTPD) as a child subreaper, so the CPU
of every process it forks counts, even of those whose parent exits first (Exim's reception
process leaves its delivery process behind): orphans are reparented to this process, which
reaps them, so its cutime/cstime hold their CPU. SIGTERM is passed on to COMMAND; once it has
exited, the remaining orphans get 10 s, then SIGKILL by PID. Exits with COMMAND's status."""

import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def children():
    me, out = os.getpid(), []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == me:
                    out.append(int(p))
            except (OSError, IndexError, ValueError):
                pass
    return out


def main():
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid = os.fork()
    if pid == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    status = 0
    while True:
        try:
            got, st = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if got == pid:
            status = os.waitstatus_to_exitcode(st)
            break
    end = time.time() + 10
    while time.time() < end:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.1)
        except ChildProcessError:
            break
    for p in children():
        try:
            os.kill(p, signal.SIGKILL)
            os.waitpid(p, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    sys.exit(status)


if __name__ == "__main__":
    main()
