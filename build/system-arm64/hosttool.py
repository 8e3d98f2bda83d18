#!/usr/bin/env python3
"""Host side of the arm64 system rig: MLLP sender, load with a ledger of
ACKed control IDs, MLLP receiver, and an LIS01-A2 sender on a pty.

Messages are synthetic (no patient data); each carries a unique MSH-10
control ID so the rig can match what was acknowledged against what arrived.

  hosttool.py send PORT ID...                 one message per ID; prints "ID AA"
  hosttool.py load PORT LEDGER SECONDS CONNS  each AA'd ID appended to LEDGER
  hosttool.py receive PORT OUT                AA to everything; IDs to OUT
  hosttool.py lis01 DEVICE ID                 one LIS01-A2 transmission
  hosttool.py serve-https PORT DIR CERT KEY   firmware images over HTTPS on 127.0.0.1
  hosttool.py fwtimes MQTTLOG VERSION         an update's steps, by the gateway's clock
"""
import functools
import http.server
import os
import socket
import ssl
import sys
import termios
import threading
import time

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
ENQ, ACK, NAK, EOT, STX, ETX = b"\x05", b"\x06", b"\x15", b"\x04", b"\x02", b"\x03"


def message(cid):
    return ("MSH|^~\\&|RIGLAB|WARD|HL7EDGE|GW|20261130120000||ORU^R01|%s|P|2.5.1\r"
            "PID|1||RIG0001^^^RIG\r"
            "OBX|1|NM|GLU^Glucose||5.5|mmol/L|||||F\r" % cid).encode()


def read_frame(sock, buf):
    while FS + CR not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    end = buf.index(FS + CR)
    start = buf.find(VT)
    return buf[start + 1:end], buf[end + 2:]


def ack_code(ack):
    for seg in ack.split(CR):
        if seg.startswith(b"MSA|"):
            return seg.split(b"|")[1].decode()
    return "??"


def cmd_send(port, ids):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=60)
    buf = b""
    bad = 0
    for cid in ids:
        s.sendall(VT + message(cid) + FS + CR)
        ack, buf = read_frame(s, buf)
        code = ack_code(ack)
        print(cid, code, flush=True)
        bad += code not in ("AA", "CA")
    return 1 if bad else 0


def cmd_load(port, ledger, seconds, conns):
    deadline = time.time() + float(seconds)
    lock = threading.Lock()
    out = open(ledger, "a", buffering=1)
    counts = {"acked": 0, "errors": 0}

    def worker(w):
        n = 0
        while time.time() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
                buf = b""
                while time.time() < deadline:
                    n += 1
                    cid = "PC%02d%07d" % (w, n)
                    s.sendall(VT + message(cid) + FS + CR)
                    ack, buf = read_frame(s, buf)
                    if ack_code(ack) == "AA":
                        with lock:
                            out.write(cid + "\n")
                            counts["acked"] += 1
                s.close()
            except (OSError, ConnectionError):
                with lock:
                    counts["errors"] += 1
                time.sleep(0.5)

    ts = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(int(conns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.close()
    print("acked %d connection_errors %d" % (counts["acked"], counts["errors"]), flush=True)
    return 0


def cmd_receive(port, outpath):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(port)))
    srv.listen(16)
    out = open(outpath, "a", buffering=1)
    lock = threading.Lock()

    def serve(c):
        buf = b""
        try:
            while True:
                msg, buf = read_frame(c, buf)
                segs = msg.split(CR)
                msh = segs[0].split(b"|")
                cid = msh[9].decode() if len(msh) > 9 else "?"
                with lock:
                    out.write(cid + "\n")
                ack = ("MSH|^~\\&|RIGRECV|HOST|HL7EDGE|GW|20261130120000||ACK|A%s|P|2.5.1\rMSA|AA|%s\r" % (cid, cid)).encode()
                c.sendall(VT + ack + FS + CR)
        except (OSError, ConnectionError):
            c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def checksum(body):
    return ("%02X" % (sum(body) % 256)).encode()


def cmd_lis01(device, cid):
    fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0  # iflag: raw
    attrs[1] = 0  # oflag
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
    attrs[3] = 0  # lflag: no echo, no canonical mode
    attrs[4] = attrs[5] = termios.B9600
    attrs[6][termios.VMIN] = 0
    attrs[6][termios.VTIME] = 10  # reads return after 1 s of silence
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    termios.tcflush(fd, termios.TCIOFLUSH)

    def reply(what, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            b = os.read(fd, 1)
            if b in (ACK, NAK, EOT, ENQ):
                return b
        raise TimeoutError("no reply to " + what)

    os.write(fd, ENQ)
    r = reply("ENQ")
    if r != ACK:
        print("ENQ answered %r" % r)
        return 1
    text = message(cid)
    frames = [text[i:i + 240] for i in range(0, len(text), 240)]
    for i, f in enumerate(frames):
        fn = str((i + 1) % 8).encode()
        end = ETX if i == len(frames) - 1 else b"\x17"
        body = fn + f + end
        for attempt in range(6):
            os.write(fd, STX + body + checksum(body) + CR + b"\n")
            r = reply("frame %d" % (i + 1), timeout=30)
            if r == ACK:
                break
        else:
            os.write(fd, EOT)
            print("frame %d NAKed six times" % (i + 1))
            return 1
    os.write(fd, EOT)
    print(cid, "ACK", len(frames), "frames", flush=True)
    return 0


def cmd_serve_https(port, directory, cert, key):
    # The firmware download server: the guest reaches the host's loopback
    # as qemu's 10.0.2.2, the name the certificate is issued for.
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


def cmd_fwtimes(path, version):
    # mosquitto_sub -v lines "TOPIC PAYLOAD": the firmware topic's first
    # time in each state for VERSION, and the first birth after the trial
    # began, against the first "downloading".
    import datetime
    import json

    def ts(s):
        whole, _, frac = s.rstrip("Z").partition(".")
        return datetime.datetime.fromisoformat(whole).timestamp() + float("0." + (frac or "0"))
    first, online = {}, None
    for line in open(path, errors="replace"):
        topic, _, payload = line.rstrip("\n").partition(" ")
        try:
            m = json.loads(payload)
        except ValueError:
            continue
        if topic.endswith("/firmware") and m.get("version") == version:
            first.setdefault(m["state"], ts(m["updated"]))
        elif topic.endswith("/status") and m.get("state") == "online" and "trial" in first and online is None:
            online = (ts(m["time"]), m.get("version"))
    if "downloading" not in first:
        print("no firmware state for", version)
        return 1
    t0 = first["downloading"]
    if online:  # a birth's time has whole seconds only
        first["online as %s" % online[1]] = online[0]
    out = ["%s +%.1f s" % (k, v - t0) for k, v in sorted(first.items(), key=lambda kv: kv[1])]
    print("from downloading: " + ", ".join(out))
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "send":
        return cmd_send(args[0], args[1:])
    if cmd == "load":
        return cmd_load(*args)
    if cmd == "receive":
        return cmd_receive(*args)
    if cmd == "lis01":
        return cmd_lis01(*args)
    if cmd == "fwtimes":
        return cmd_fwtimes(*args)
    if cmd == "serve-https":
        return cmd_serve_https(*args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
