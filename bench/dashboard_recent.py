"""The dashboard's recent-requests state (engine/core/recent.py): what a request pays to be
counted (add), what the once-a-second publishing costs (export + orjson), and what a merged
snapshot costs; against main's per-process version. BENCHMARKS.md section 15.

Run from the repository root: python bench/dashboard_recent.py /path/to/main/checkout
"""
import importlib.util
import random
import sys
import time
import timeit

import orjson


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m
new = load("engine/core/recent.py", "recent_new")
old = load(sys.argv[1] + "/engine/core/recent.py", "recent_old")
random.seed(1)
def reqs(mod, n, start=1000.0):
    return [mod.FinishedRequest(at=start + i / 100, ms=random.lognormvariate(4, 1), status="ok",
                                model="small", tier=1, cache="MISS", dedup="LEADER",
                                cost_usd=1e-5, input_tokens=20, output_tokens=40) for i in range(n)]
N = 200_000
for label, mod in (("main", old), ("branch", new)):
    best = []
    for _ in range(5):
        r = mod.RecentRequests()
        items = reqs(mod, N)
        t = time.perf_counter()
        for it in items:
            r.add(it)
        best.append((time.perf_counter() - t) / N * 1e6)
    print(f"{label}: add() {min(best):.2f} us/request (best of 5, {N} adds)")
r = new.RecentRequests()
for it in reqs(new, 6000, start=1000.0):   # 100 req/s over 60 s
    r.add(it)
n = 50
t = timeit.timeit(lambda: orjson.dumps(r.export()), number=n) / n
size = len(orjson.dumps(r.export()))
print(f"export+dumps at 100 req/s: {t*1e3:.2f} ms, {size} bytes")
exports = [orjson.loads(orjson.dumps(r.export())) for _ in range(4)]
for k in (0, 1, 3):
    t = timeit.timeit(lambda k=k: r.snapshot(1060.0, others=exports[:k]), number=n) / n
    print(f"snapshot merging {k} other processes: {t*1e3:.2f} ms")
o = old.RecentRequests()
for it in reqs(old, 6000, start=1000.0):
    o.add(it)
t = timeit.timeit(lambda: o.snapshot(1060.0), number=n) / n
print(f"main snapshot (one process): {t*1e3:.2f} ms")
