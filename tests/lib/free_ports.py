#!/usr/bin/env python3
"""free_ports.py N: N distinct loopback ports that nobody listens on now.

They are drawn at random below the kernel's range for outgoing connections
(/proc/sys/net/ipv4/ip_local_port_range), so no connect (a peer dial, a
Redis client) can take one between this choice and the server's bind, as
happens now and then to a port from bind(0), which comes from that range.
Prints them on one line; exits 1 when it cannot find N.
"""
import random
import socket
import sys


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def main():
    n = int(sys.argv[1])
    low = ephemeral_low()
    top = low if low > 11000 else 65536
    ports = []
    for _ in range(1000 * n):
        if len(ports) == n:
            break
        p = random.randrange(10000, top)
        if p in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        ports.append(p)
    if len(ports) < n:
        return 1
    print(" ".join(map(str, ports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
