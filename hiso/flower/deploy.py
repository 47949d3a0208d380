"""`federation.engine: flower`: the runner starts a Flower SuperLink and SuperNodes on 127.0.0.1, offline, runs
the suite's ServerApp/ClientApp (hiso/flower/app.py) through `flwr run`, and stops every process it started.

    python -m hiso run --config C --set federation.engine=flower --out DIR

Layout under the run folder: `flower/config.json` (the run's config), `flower/app/` (the Flower app: a
pyproject naming the components), `flower/home/` (FLWR_HOME: the CLI's connection), `flower/superlink.log`,
`flower/node<i>.log` and `flower/node<i>/` (each SuperNode's clients' replicas), `flower/serverapp.log` (what
`flwr run --stream` printed) and `flower/outcome.json`, which the ServerApp writes whatever happens: the runner
reads the run's outcome there, because `flwr run` can exit 0 when the ServerApp failed.

Across machines: start `flower-superlink` (TLS: --ssl-certfile/--ssl-keyfile/--ssl-ca-certfile instead of
--insecure) on one host and `flower-supernode --superlink HOST:PORT --node-config "partition-ids='0,3'
state-dir='/path'"` on the others; then `flwr run` the app folder this module writes (docs/deployment.md).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

APP_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "hiso-flower"
version = "0.1.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "hiso-bench"

[tool.flwr.app.components]
serverapp = "{module}:server"
clientapp = "{module}:client"

[tool.flwr.app.config]
out = ""
"""


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name  # the console scripts of the interpreter running the suite
    return str(here) if here.exists() else name


def partitions(num_clients: int, supernodes: int) -> list[list[int]]:
    """Client ids per SuperNode: round-robin (0 supernodes: one per client)."""
    s = supernodes or num_clients
    return [list(range(i, num_clients, s)) for i in range(s)]


class Processes:
    """The SuperLink and SuperNodes: each in its own process group (a SuperNode's ClientApp children too), all
    stopped on exit, SIGTERM first, SIGKILL after a grace period."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], log: Path, env: dict) -> subprocess.Popen:
        f = open(log, "ab")
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True)
        f.close()
        self.procs.append((name, p))
        return p

    def stop(self, name: str | None = None, grace: float = 10.0) -> None:
        chosen = [(n, p) for n, p in self.procs if name is None or n == name]
        for _, p in chosen:
            _signal_group(p, signal.SIGTERM)
        deadline = time.time() + grace
        for _, p in chosen:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(p, signal.SIGKILL)  # the group: children (superexec, clientapps) that outlive it
            p.wait()
        for _, p in chosen:  # until the last member of each group is gone (reaped by init)
            deadline = time.time() + 10
            while time.time() < deadline and _group_alive(p.pid):
                time.sleep(0.05)
        self.procs = [(n, p) for n, p in self.procs if (n, p) not in chosen]


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the SuperLink exited ({proc.returncode}); see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the SuperLink did not listen on 127.0.0.1:{port} within {timeout:g} s; see {log}")


def write_app(folder: Path, link_port: int, module: str = "hiso.flower.app") -> dict:
    """The Flower app folder and FLWR_HOME; returns the environment for the Flower processes."""
    app, home = folder / "app", folder / "home"
    app.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(APP_PYPROJECT.replace("{module}", module))
    (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
                                      f'address = "127.0.0.1:{link_port}"\ninsecure = true\n')
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # flower-superexec etc.
    return {**os.environ, "PATH": path, "FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1"}


def start_supernode(procs: Processes, folder: Path, i: int, ids: list[int], link_port: int, port: int, env: dict,
                    extra_config: str = "") -> subprocess.Popen:
    state = folder / f"node{i}"
    state.mkdir(parents=True, exist_ok=True)
    node_config = f"partition-ids='{','.join(map(str, ids))}' state-dir='{state}'{extra_config}"
    return procs.start(f"node{i}", [_bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                                    "--port", str(port), "--node-config", node_config],
                       folder / f"node{i}.log", env)


def _write_tcp(path: Path, events: list) -> None:
    from ..io import atomic_write
    per: dict[int, list[int]] = {}
    for t, d, n in events:
        per.setdefault(int(t), [0, 0])[d == "down"] += n
    atomic_write(path, "unix_second,tcp_bytes_up,tcp_bytes_down\n" +
                 "".join(f"{s},{u},{d}\n" for s, (u, d) in sorted(per.items())))


def deploy(cfg, out_dir, *, replace_different: bool = False, restart: bool = False, node_faults: dict | None = None,
           during=None, idle_probe: float = 0.0, module: str = "hiso.flower.app"):
    """Run `cfg` over Flower on this machine; returns the RunResult the ServerApp's runner wrote.
    `node_faults` {supernode index: extra node config} and `during(procs, folder, ports)` (called while the
    run goes on) serve the fault tests: a corrupted replay, a SuperNode killed and restarted.
    The SuperNodes reach the SuperLink through a counting TCP proxy (hiso/flower/proxy.py): every second's
    bytes go to flower/tcp_per_second.csv; `idle_probe` seconds of connected-but-idle SuperNodes before the run
    measure the polling alone (flower/tcp_idle.json).  `module` names the Flower components (hiso.flower.probe:
    the d-sized exchange of FedAvg/FedZO, bytes only)."""
    import pandas as pd

    from ..io import atomic_write
    from ..rundir import RunDir
    from ..runner import RunFailed, RunResult, _prior
    if out_dir is None:
        raise ValueError("federation.engine flower writes its processes' logs under the run folder: give --out")
    out = Path(out_dir).resolve()
    rundir = RunDir(out)
    rundir.lock()  # refuse a folder another run holds, and a different config, before starting any process
    try:
        if restart:
            rundir.clear()
        old = _prior(cfg, rundir, replace_different)
    finally:
        rundir.unlock()
    if old.get("status") in ("complete", "diverged", "failed"):
        from ..runner import run
        return run(cfg, out, deployed=True)  # final: nothing to deploy
    folder = out / "flower"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "outcome.json").unlink(missing_ok=True)
    atomic_write(folder / "config.json", json.dumps(cfg.to_dict()))
    f = cfg.federation
    parts = partitions(f.num_clients, f.supernodes)
    link_port, *node_ports = free_ports(1 + len(parts))
    env = write_app(folder, link_port, module)
    atomic_write(folder / "partitions.json", json.dumps(parts))
    procs = Processes()
    from .proxy import CountingProxy
    proxy = None
    try:
        link = procs.start("superlink", [_bin("flower-superlink"), "--insecure",
                                         "--disable-runtime-dependency-installation",
                                         "--database", str(folder / "superlink.db"), "--port", str(link_port)],
                           folder / "superlink.log", env)
        _wait_port(link_port, link, folder / "superlink.log")
        proxy = CountingProxy(link_port).start()
        for i, ids in enumerate(parts):
            start_supernode(procs, folder, i, ids, proxy.port, node_ports[i], env, (node_faults or {}).get(i, ""))
        if idle_probe:
            time.sleep(5.0)  # registration
            t0, n0 = time.time(), len(proxy.events)
            time.sleep(idle_probe)
            idle = proxy.events[n0:]
            atomic_write(folder / "tcp_idle.json", json.dumps({
                "seconds": time.time() - t0, "supernodes": len(parts),
                "up": sum(n for _, d, n in idle if d == "up"), "down": sum(n for _, d, n in idle if d == "down")}))
        with open(folder / "serverapp.log", "ab") as log:
            flwr = subprocess.Popen([_bin("flwr"), "run", str(folder / "app"), "local", "--stream",
                                     "--run-config", f"out='{out}'"], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            if during is not None:
                during(procs, folder, {"link": proxy.port, "nodes": node_ports, "env": env, "parts": parts})
            flwr.wait()
    finally:
        procs.stop()
        if proxy is not None:
            proxy.stop()
            _write_tcp(folder / "tcp_per_second.csv", proxy.events)
    outcome_path = folder / "outcome.json"
    if not outcome_path.exists():
        raise RunFailed("failed", f"the ServerApp left no outcome (flwr run exited {flwr.returncode}); see "
                                  f"{folder / 'serverapp.log'} and {folder / 'superlink.log'}")
    outcome = json.loads(outcome_path.read_text())
    if outcome["status"] != "complete":
        raise RunFailed(outcome["status"], f"{outcome['message']} (see {folder / 'serverapp.log'})")
    info = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    if info and outcome.get("nodes_numerics"):  # the SuperNodes' kernels beside the server's
        from ..io import atomic_write
        nodes = outcome["nodes_numerics"]
        kernels = info.setdefault("numerics", {})
        kernels["nodes"] = nodes
        kernels["nodes_bit_identical_across_cpus"] = all(n["bit_identical_across_cpus"] for n in nodes.values())
        atomic_write(out / "run.json", json.dumps(info, indent=2))
    return RunResult("complete", pd.read_csv(out / "metrics.csv"), out, None, info.get("initial_eval"))
