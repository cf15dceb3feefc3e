"""Spawn-to-ready time of a broker from Python: from Broker.start() until both URL
lines are read, over N starts (100 by default); prints p50 and p90.

    python examples/python/spawn_time.py [N]
"""

import sys
import time

from warren_broker import Broker

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
times = []
for _ in range(n):
    began = time.perf_counter()
    broker = Broker.start()
    times.append(time.perf_counter() - began)
    broker.stop()
times.sort()
print(f"python: spawn to ready p50 {times[n // 2] * 1000:.1f} ms, "
      f"p90 {times[n * 9 // 10] * 1000:.1f} ms over {n} starts")
