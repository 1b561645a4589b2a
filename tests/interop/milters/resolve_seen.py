"""A pymilter (libmilter) milter that records what the MTA told it about the
client at CONNECT: the hostname argument and the macros {client_name},
{client_ptr}, {client_resolve}, {client_addr}; one JSON object per line in LOG.

Run with Debian's python3 (python3-milter):
    /usr/bin/python3 resolve_seen.py inet:PORT@127.0.0.1 LOG
"""

import json
import sys
import threading

import Milter

SOCKET, LOG = sys.argv[1], sys.argv[2]
_lock = threading.Lock()
MACROS = ["{client_name}", "{client_ptr}", "{client_resolve}", "{client_addr}", "_"]


class Seen(Milter.Base):
    def connect(self, hostname, family, hostaddr):
        macros = {m: self.getsymval(m) for m in MACROS}
        with _lock, open(LOG, "a") as f:
            f.write(json.dumps({"hostname": hostname, "addr": str(hostaddr[0]), "macros": macros}) + "\n")
        return Milter.CONTINUE


if __name__ == "__main__":
    Milter.factory = Seen
    Milter.runmilter("resolve_seen", SOCKET, 60)
