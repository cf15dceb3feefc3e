#!/usr/bin/env python3
"""Records what real AMQP clients send, for the fuzz targets' seed corpora.

Sits as a TCP proxy between a client and a running Warren, and writes every byte
each client connection sent into OUT_DIR/PREFIX-N (one file per connection), which
is exactly the input the `connection` fuzz target takes.

    warren --bind 127.0.0.1:5673 &
    python3 record_traffic.py 127.0.0.1:5673 OUT_DIR PREFIX -- python3 pika_session.py {url}

The client command gets the proxy's URL in place of `{url}`; the proxy stops when
the command exits.
"""
import os
import socket
import subprocess
import sys
import threading


def pump(src, dst, sink):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if sink is not None:
                sink.extend(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    target, out_dir, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    command = sys.argv[sys.argv.index("--") + 1:]
    host, port = target.rsplit(":", 1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    url = "amqp://guest:guest@127.0.0.1:%d/%%2f" % listener.getsockname()[1]
    recorded = []
    threads = []

    def accept():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((host, int(port)))
            sink = bytearray()
            recorded.append(sink)
            for args in ((client, upstream, sink), (upstream, client, None)):
                t = threading.Thread(target=pump, args=args, daemon=True)
                t.start()
                threads.append(t)

    threading.Thread(target=accept, daemon=True).start()
    code = subprocess.call([part.replace("{url}", url) for part in command])
    listener.close()
    for t in threads:
        t.join(timeout=5)
    os.makedirs(out_dir, exist_ok=True)
    for i, sink in enumerate(recorded):
        with open(os.path.join(out_dir, "%s-%d" % (prefix, i)), "wb") as f:
            f.write(bytes(sink))
    print("recorded %d connection(s), client exited %d" % (len(recorded), code))
    sys.exit(code)


if __name__ == "__main__":
    main()
