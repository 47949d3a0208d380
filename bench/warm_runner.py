"""What the workflow's warm runner (hiso/warm.py) saves per job: the same small runs started cold
(`python -m hiso run`, a fresh interpreter) and warm (forked from the server), alternated in one session so
that machine noise hits both, with the wall time of each and the median ratio.

    python -m bench.warm_runner --repeats 5
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

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "quadratic d=1000, 40 rounds": ["--config", "workflows/config/base/quadratic.yaml", "--set", "federation.rounds=40"],
    "digits CNN, 20 rounds": ["--config", "workflows/config/base/digits.yaml", "--set", "federation.rounds=20"],
}
THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def timed(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hiso", "run", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    env = {**os.environ, **THREADS}
    env.pop("HISO_WARM_SOCKET", None)
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "s.sock"
        server = subprocess.Popen([sys.executable, "-m", "hiso.warm", "serve", "--socket", str(sock)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not sock.exists():
            time.sleep(0.1)
        try:
            print("| run | cold s (median) | warm s (median) | cold / warm |\n|---|---|---|---|")
            for name, args in RUNS.items():
                cold, warm = [], []
                for i in range(a.repeats):
                    common = [*args, "--set", "run.progress=false", "--set", "run.threads=1"]
                    cold.append(timed([*common, "--out", f"{tmp}/c{i}{len(cold)}{name[:4]}"], env))
                    warm.append(timed([*common, "--out", f"{tmp}/w{i}{len(warm)}{name[:4]}"],
                                      {**env, "HISO_WARM_SOCKET": str(sock)}))
                c, w = statistics.median(cold), statistics.median(warm)
                print(f"| {name} | {c:.2f} | {w:.2f} | {c / w:.2f} |", flush=True)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
