"""A test milter built on pymilter (libmilter): it records every callback
with the macros it was given, one JSON object per line in LOG, and acts on
words in the envelope and the Subject so that each test can ask for one
reply or modification.

Run with Debian's python3 (python3-milter):
    /usr/bin/python3 scripted.py inet:PORT@127.0.0.1 LOG
"""

import json
import os
import sys
import threading
import time

import Milter

SOCKET, LOG = sys.argv[1], sys.argv[2]
_lock = threading.Lock()

MACROS = ["j", "_", "v", "i", "{daemon_name}", "{daemon_addr}", "{if_addr}", "{client_addr}", "{client_port}",
          "{client_name}", "{tls_version}", "{cipher}", "{cert_subject}", "{cert_issuer}", "{verify}",
          "{auth_type}", "{auth_authen}", "{mail_addr}", "{mail_host}", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"]


def record(event, **fields):
    with _lock, open(LOG, "a") as f:
        f.write(json.dumps(dict(event=event, **fields)) + "\n")


class Scripted(Milter.Base):
    def __init__(self):
        self.headers = []
        self.content = b""
        self.words = set()

    def macros(self):
        out = {}
        for m in MACROS:
            v = self.getsymval(m)
            if v is not None:
                out[m] = v
        return out

    def connect(self, hostname, family, hostaddr):
        record("connect", hostname=hostname, addr=str(hostaddr[0]), macros=self.macros())
        # A test switches connection refusal on by creating LOG.connect-reject / .connect-tempfail.
        for what, reply in (("reject", Milter.REJECT), ("tempfail", Milter.TEMPFAIL)):
            if os.path.exists(f"{LOG}.connect-{what}"):
                return reply
        return Milter.CONTINUE

    def hello(self, name):
        record("helo", name=name, macros=self.macros())
        if name == "reject.helo.test":
            return Milter.REJECT
        return Milter.CONTINUE

    def envfrom(self, sender, *params):
        self.headers, self.content, self.words = [], b"", set()
        record("mail", sender=sender, params=list(params), macros=self.macros())
        if "milter-tempfail" in sender:
            return Milter.TEMPFAIL
        if "milter-reject" in sender:
            self.setreply("550", "5.7.26", "Sender refused by milter")
            return Milter.REJECT
        return Milter.CONTINUE

    def negotiate(self, opts):
        r = super().negotiate(opts)
        # SMFIR_SETSYMLIST: only these macros at RCPT. (Called directly: pymilter's
        # @symlist passes bytes where its C module wants str on Python 3.)
        self._ctx.setsymlist(Milter.M_ENVRCPT, "{rcpt_addr} {rcpt_mailer}")
        return r

    def envrcpt(self, rcpt, *params):
        record("rcpt", rcpt=rcpt, params=list(params), macros=self.macros())
        if rcpt.startswith("<milter-reject"):
            self.setreply("553", "5.7.9", "Recipient refused by milter")
            return Milter.REJECT
        if rcpt.startswith("<milter-tempfail"):
            return Milter.TEMPFAIL
        if rcpt.startswith("<milter-discard"):
            return Milter.DISCARD
        return Milter.CONTINUE

    def data(self):
        record("data", macros=self.macros())
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name, value):
        self.headers.append([name, value])
        if name.lower() == "subject":
            self.words = set(value.split())
        return Milter.CONTINUE

    def eoh(self):
        return Milter.CONTINUE

    def body(self, chunk):
        self.content += chunk
        return Milter.CONTINUE

    def eom(self):
        w = self.words
        record("eom", headers=self.headers, body=self.content.decode("latin-1"), macros=self.macros(),
               words=sorted(w))
        if "slow" in w:
            time.sleep(4)
        if "progress" in w:
            for _ in range(3):
                time.sleep(0.6)
                self.progress()
        if "reject-eom" in w:
            self.setreply("550", "5.7.1", "Content refused by milter")
            return Milter.REJECT
        if "tempfail-eom" in w:
            return Milter.TEMPFAIL
        if "discard" in w:
            return Milter.DISCARD
        if "add-header" in w:
            self.addheader("X-Milter-Added", "yes\n\tfolded")
        if "insert-header" in w:
            self.addheader("X-Milter-Top", "first", 0)
        if "change-header" in w:
            self.chgheader("Subject", 1, "changed by milter")
        if "delete-header" in w:
            self.chgheader("X-Delete-Me", 1, "")
        if "replace-body" in w:
            self.replacebody(b"replaced by the milter\r\nsecond line\r\n")
        if "change-from" in w:
            self.chgfrom("<new-sender@example.net>")
        if "add-rcpt" in w:
            self.addrcpt("<carol@mx.test>")
        if "del-rcpt" in w:
            self.delrcpt("<bob@mx.test>")
        if "quarantine" in w:
            self.quarantine("suspicious test content")
        return Milter.ACCEPT

    def abort(self):
        record("abort")
        return Milter.CONTINUE

    def close(self):
        record("close")
        return Milter.CONTINUE


def main():
    Milter.factory = Scripted
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY | Milter.ADDRCPT | Milter.ADDRCPT_PAR
                     | Milter.DELRCPT | Milter.QUARANTINE | Milter.CHGFROM | Milter.SETSYMLIST)
    record("start")
    Milter.runmilter("scripted", SOCKET, 60)


if __name__ == "__main__":
    main()
