"""Generates tests/interop/parity/sendmail-*.toml, the parity tables of
test_import_sendmail.py, in the `import::parity::Probe` format (also read by
`postern import sendmail --verify --probes FILE`). Run it after changing the
tables here: python3 tests/interop/parity/gen_sendmail_probes.py"""
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
def esc(s): return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'
def write(path, header, probes):
    out = [header]
    for p in probes:
        out.append("[[probe]]")
        out.append(f"name = {esc(p['name'])}")
        out.append(f"client_ip = {esc(p['ip'])}")
        out.append(f"port = {esc(p['port'])}")
        if p.get('starttls'): out.append("starttls = true")
        if p.get('cert', 'none') != 'none': out.append(f"cert = {esc(p['cert'])}")
        if p.get('auth'): out.append(f"auth = [{esc(p['auth'][0])}, {esc(p['auth'][1])}]")
        out.append(f"mail_from = {esc(p['from'])}")
        out.append("rcpts = [" + ", ".join(esc(r) for r in p['rcpts']) + "]")
        out.append("")
    (HERE / path).write_text("\n".join(out))
    print(path, len(probes))

GOOD = ("alice", "alice-secret")
BAD = ("alice", "wrong")
# 1. seed
R1 = ["alice@mx.test", "nosuch@mx.test", "x@far.example", "postmaster", "ALICE@mx.test", "x%far.example@mx.test"]
P = []
for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.5"]:
    for tls in [False, True]:
        for frm in ["someone@far.example", "", "alice@mx.test"]:
            P.append(dict(name=f"smtp {ip} tls={tls} from={frm or '<>'}", ip=ip, port="smtp", starttls=tls, **{"from": frm}, rcpts=R1))
for ip in ["127.0.0.2", "127.0.0.5"]:
    for cert in ["trusted", "look-alike", "self-signed"]:
        P.append(dict(name=f"smtp+tls {ip} cert={cert}", ip=ip, port="smtp", starttls=True, cert=cert, **{"from": "gw@far.example"}, rcpts=R1))
for ip in ["127.0.0.2", "127.0.0.5"]:
    for auth, tls in [(GOOD, True), (BAD, True), (GOOD, False)]:
        P.append(dict(name=f"smtp {ip} tls={tls} auth={auth[1]}", ip=ip, port="smtp", starttls=tls, auth=auth, **{"from": "alice@mx.test"}, rcpts=R1))
for ip in ["127.0.0.2", "127.0.0.5"]:
    for auth in [None, GOOD, BAD]:
        for cert in ["none", "trusted"]:
            P.append(dict(name=f"smtps {ip} auth={auth and auth[1]} cert={cert}", ip=ip, port="smtps", cert=cert, auth=auth, **{"from": "alice@mx.test"}, rcpts=R1))
P.append(dict(name="smtp stranger sender bob", ip="127.0.0.2", port="smtp", **{"from": "bob@mx.test"}, rcpts=["team@mx.test", "bob@mx.test", "root@mx.test"]))
P.append(dict(name="smtp local sender to many", ip="127.0.0.1", port="smtp", **{"from": "bob@mx.test"}, rcpts=["team@mx.test", "y@relay.test", "Postmaster@mx.test"]))
write("sendmail-seed.toml", "# Parity table for tests/interop/parity/sendmail-seed.mc (test_import_sendmail.py).\n# Users: alice / alice-secret in the sasldb2. Certificates: trusted = CN=gw.test from\n# CN=Parity Test CA; look-alike = same names, another CA key; self-signed = CN=gw.test.\n", P)

# 2. relay by address
R2 = ["alice@mx.test", "nosuch@mx.test", "y@relay.test", "z@branch.test", "x@far.example", "Team@MX.test"]
P = []
for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.6", "127.0.0.7"]:
    for frm in ["someone@far.example", "", "spammer@far.example", "x@junk.example", "alice@mx.test"]:
        P.append(dict(name=f"smtp {ip} from={frm or '<>'}", ip=ip, port="smtp", **{"from": frm}, rcpts=R2))
    for frm in ["someone@far.example", "alice@mx.test"]:
        P.append(dict(name=f"smtp+tls {ip} from={frm}", ip=ip, port="smtp", starttls=True, **{"from": frm}, rcpts=R2))
for ip in ["127.0.0.2", "127.0.0.3"]:
    P.append(dict(name=f"tricky {ip}", ip=ip, port="smtp", **{"from": "a@far.example"}, rcpts=["x%far.example@relay.test", "x@[127.0.0.1]", "postmaster", "bob@mx.test", "\"alice\"@mx.test"]))
write("sendmail-relay.toml", "# Parity table for tests/interop/parity/sendmail-relay.mc (test_import_sendmail.py).\n", P)

# 3. smart host satellite
R3 = ["alice@mx.test", "alice@sat.test", "nosuch@sat.test", "x@far.example", "bob@SAT.test"]
P = []
for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.4"]:
    for tls in [False, True]:
        for frm in ["someone@far.example", ""]:
            P.append(dict(name=f"smtp {ip} tls={tls} from={frm or '<>'}", ip=ip, port="smtp", starttls=tls, **{"from": frm}, rcpts=R3))
    for cert in ["trusted", "look-alike", "self-signed"]:
        P.append(dict(name=f"smtp+tls {ip} cert={cert}", ip=ip, port="smtp", starttls=True, cert=cert, **{"from": "app@sat.test"}, rcpts=R3))
for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.4"]:
    for auth, tls in [(None, True), (GOOD, True), (BAD, True), (GOOD, False), (None, False)]:
        P.append(dict(name=f"submission {ip} tls={tls} auth={auth and auth[1]}", ip=ip, port="submission", starttls=tls, auth=auth, **{"from": "alice@sat.test"}, rcpts=R3))
    for cert in ["trusted", "self-signed"]:
        P.append(dict(name=f"submission+tls {ip} cert={cert}", ip=ip, port="submission", starttls=True, cert=cert, **{"from": "alice@sat.test"}, rcpts=R3))
for ip in ["127.0.0.2"]:
    for auth in [GOOD, BAD]:
        for cert in ["none", "trusted"]:
            P.append(dict(name=f"smtp+tls {ip} auth={auth[1]} cert={cert}", ip=ip, port="smtp", starttls=True, cert=cert, auth=auth, **{"from": "alice@sat.test"}, rcpts=R3))
P.append(dict(name="smtp stranger to aliases", ip="127.0.0.2", port="smtp", **{"from": ""}, rcpts=["team@sat.test", "postmaster", "root@mx.test"]))
write("sendmail-smarthost.toml", "# Parity table for tests/interop/parity/sendmail-smarthost.mc (test_import_sendmail.py).\n", P)
