#!/usr/bin/env python3
"""Deletes one bench's JetStream state: the stream NAME and the KV bucket NAME (stream KV_NAME),
over the plain NATS protocol (no client library needed). Touches nothing else.

  nats_reset.py [--url 127.0.0.1:4222] NAME
"""
import argparse, json, socket


def request(sock, f, subject, inbox):
    sock.sendall(f"PUB {subject} {inbox} 0\r\n\r\n".encode())
    while True:
        line = f.readline().decode()
        if line.startswith("PING"):
            sock.sendall(b"PONG\r\n")
        elif line.startswith("MSG"):
            size = int(line.split()[-1])
            body = f.read(size + 2)[:size]
            return json.loads(body or b"{}")
        elif line.startswith("-ERR"):
            raise SystemExit(line.strip())
        elif not line:
            raise SystemExit("NATS closed the connection")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="127.0.0.1:4222")
    ap.add_argument("name")
    a = ap.parse_args()
    host, port = a.url.removeprefix("nats://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    f = sock.makefile("rb")
    f.readline()  # INFO
    inbox = "_INBOX.bench_reset"
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n' + f"SUB {inbox} 1\r\n".encode())
    for stream in (a.name, "KV_" + a.name):
        r = request(sock, f, f"$JS.API.STREAM.DELETE.{stream}", inbox)
        err = r.get("error", {})
        if not r.get("success") and err.get("err_code") != 10059:  # 10059: stream not found
            raise SystemExit(f"deleting {stream}: {r}")


if __name__ == "__main__":
    main()
