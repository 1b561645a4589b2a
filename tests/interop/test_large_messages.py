"""Large messages relayed byte for byte (issue 20: no extra copies of the
body on the way in or out). A real client (Python smtplib, which
dot-stuffs) sends postern messages of up to 3 MB full of lines that start
with a dot (some of them exactly where postern's 64 KiB reads and writes
end), lines of only a dot, and a last line without CRLF; postern relays
them to Postfix's smtp-sink, which un-stuffs what it receives and dumps
every message to a file. Each dump must hold exactly the text that was
sent. The same text delivered to a local Maildir is checked too.
"""

import os
import pathlib
import pwd
import shutil
import smtplib
import subprocess
import tempfile

from conftest import BASE_CONFIG, free_port, require, wait_for, wait_port

PIECE = 64 * 1024


def text(n, size):
    """About `size` octets of CRLF text, lines of 0 to 997 octets; every few
    lines one that starts with a dot, and lines starting with a dot placed
    across every 64 KiB boundary."""
    lines = [f"Subject: large-{n}", "From: <sender@example.org>", ""]
    total = sum(len(x) + 2 for x in lines)
    i = 0
    while total < size:
        i += 1
        # Next 64 KiB boundary within 3 octets of here: put a dot line on it.
        to_edge = PIECE - total % PIECE
        if to_edge <= 3 or i % 13 == 0:
            line = "." * (1 + i % 3) + "x" * (i % 5)
        elif i % 29 == 0:
            line = "."
        else:
            line = "".join(chr(97 + (i + k) % 26) for k in range((i * 7919) % 998))
        lines.append(line)
        total += len(line) + 2
    return "\r\n".join(lines) + "\r\n." + "\r\nlast line without CRLF"


def start_sink(n):
    """Postfix's smtp-sink: one dump file per message in `dumps` (a
    directory of its own, as the sink runs as postfix and cannot enter
    pytest's), exits after `n` messages; stopped by PID by the caller."""
    require("smtp-sink")
    dumps = pathlib.Path(tempfile.mkdtemp(prefix="postern-sink-"))
    os.chown(dumps, pwd.getpwnam("postfix").pw_uid, -1)
    port = free_port()
    proc = subprocess.Popen(["smtp-sink", "-u", "postfix", "-d", f"{dumps}/m.", "-M", str(n), f"127.0.0.1:{port}", "64"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc=proc)
    return proc, port, dumps


def dumped(dumps):
    """{subject: text after the sink's own records, CRLF as LF}."""
    out = {}
    for p in sorted(dumps.iterdir()):
        raw = p.read_bytes()
        start = raw.find(b"\nSubject: large-") + 1
        assert start > 0, raw[:500]
        body = raw[start:]
        subject = body.split(b"\n", 1)[0].decode()
        out[subject] = body
    return out


def test_large_messages_relay_byte_for_byte(postern_factory):
    sizes = [3_000_000, 1_048_576, 200_000, 70_000, 4096]
    sink, sink_port, dumps = start_sink(len(sizes))
    try:
        config = BASE_CONFIG + f'[relay]\nsmarthost = "127.0.0.1:{sink_port}"\nsmarthost_tls = "none"\n'
        p = postern_factory(config=config)
        texts = {}
        with smtplib.SMTP("127.0.0.1", p.port, timeout=60) as s:
            s.ehlo("client.example")
            for n, size in enumerate(sizes):
                t = text(n, size)
                texts[f"Subject: large-{n}"] = t
                s.sendmail("sender@example.org", ["someone@far.example"], t.encode())
            # The same text into a local Maildir (no dot-stuffing on the way out).
            s.sendmail("sender@example.org", ["alice@mx.test"], texts["Subject: large-1"].encode())
        # Bounded: smtp-sink exits after the last message.
        sink.wait(60)
        got = dumped(dumps)
        assert sorted(got) == sorted(texts)
        for subject, t in texts.items():
            # The sink writes lines with LF, un-stuffed, then an empty line.
            want = (t.replace("\r\n", "\n") + "\n\n").encode()
            assert got[subject] == want, f"{subject}: {len(got[subject])} octets dumped, {len(want)} sent"
        mail = p.wait_mail("alice")[0]
        body = mail[mail.find(b"Subject: large-1"):]
        assert body.replace(b"\r\n", b"\n") == (texts["Subject: large-1"].replace("\r\n", "\n") + "\n").encode()
        # The Maildir file is visible in new/ just before its flush and the log line; a relayed
        # message the sink refused at first is delivered on its retry. Bounded wait.
        wait_for(lambda: p.log().count(" delivered ") >= len(sizes) + 1, timeout=60,
                 what="a delivered line for every message")
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(5)
        shutil.rmtree(dumps, ignore_errors=True)
