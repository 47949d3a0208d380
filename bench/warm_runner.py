"""What the workflow's warm runner (hiso/warm.py) saves per job: the same small runs started cold
(`python -m hiso run`, a fresh interpreter) and warm (forked from the server), alternated in one session so
that machine noise hits both, with the median wall time of each and their ratio.  The perf tier runs it as its
`warm` part (python -m bench.perf --only warm); by hand:

    python -m bench.warm_runner --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # name -> (base config, rounds)
    "quadratic-d1000": ("workflows/config/base/quadratic.yaml", 40),
    "digits-cnn": ("workflows/config/base/digits.yaml", 20),
}
THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def timed(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hiso", "run", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure(repeats: int) -> list[dict]:
    """One row per run: the median cold and warm wall time over `repeats` alternated starts, and their ratio."""
    env = {**os.environ, **THREADS}
    env.pop("HISO_WARM_SOCKET", None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "s.sock"
        server = subprocess.Popen([sys.executable, "-m", "hiso.warm", "serve", "--socket", str(sock)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        while not sock.exists():
            if server.poll() is not None:
                raise RuntimeError(f"the warm server exited with {server.returncode}")
            time.sleep(0.1)
        try:
            for k, (name, (base, rounds)) in enumerate(RUNS.items()):
                cold, warm = [], []
                for i in range(repeats):
                    common = ["--config", base, "--set", f"federation.rounds={rounds}", "--set", "run.progress=false",
                              "--set", "run.threads=1"]
                    cold.append(timed([*common, "--out", f"{tmp}/cold-{k}-{i}"], env))
                    warm.append(timed([*common, "--out", f"{tmp}/warm-{k}-{i}"], {**env, "HISO_WARM_SOCKET": str(sock)}))
                c, w = statistics.median(cold), statistics.median(warm)
                rows.append({"run": name, "rounds": rounds, "repeats": repeats, "cold_s": c, "warm_s": w, "cold_over_warm": c / w})
                print(rows[-1], flush=True)
        finally:
            server.terminate()
            server.wait()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(pd.DataFrame(measure(a.repeats)).to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
