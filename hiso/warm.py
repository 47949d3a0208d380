"""A warm runner: one process that has imported torch, transformers and the suite forks a child per run, so a
workflow of many small runs pays the imports (about 5 s of CPU per run) once instead of once per job.

    python -m hiso.warm serve --socket PATH     the workflow starts one per local snakemake (Snakefile onstart)
    python -m hiso run ...                      with $HISO_WARM_SOCKET set, `run` asks that server first

The client passes its stdin/stdout/stderr (SCM_RIGHTS), working directory, arguments and environment; the forked
child adopts them and calls the same `hiso.__main__.main`, so the log, the exit code and every output are those
of a cold `python -m hiso run`. The client forwards SIGINT/SIGTERM to the child, and the server terminates a
child whose client went away. The client runs the command itself (cold) when no server answers (a cluster node,
a stale socket), when the server was started under other import-time settings (HF_*, TRANSFORMERS_*, OMP_*, ...),
or when the suite's source changed after the server imported it.  A job that takes a GPU slot or whose task
runs on a device other than the CPU also runs cold, and the server never probes CUDA (a probe before a fork
leaves every forked child unable to use CUDA).

This module imports only the standard library at module level: the client must stay cheap.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

from .warmwire import SOCKET_ENV, _recv, _send, client  # noqa: F401  (client: re-exported for callers and tests)

# Variables that libraries read when they are imported: a server imported under other values cannot serve.  The
# last five pick the CPU kernels that decide a run's bits (hiso/numerics.py).
IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "OMP_", "MKL_", "OPENBLAS",
                        "TOKENIZERS", "DATASETS", "PYTHON", "NUMEXPR", "CUBLAS", "KMP_", "GOTO_", "VECLIB",
                        "ATEN_", "ONEDNN_", "DNNL_", "NPY_", "HISO_NUMERICS")
PRELOAD = ("hiso.__main__", "hiso.run", "hiso.methods", "hiso.tasks.text", "hiso.tasks.digits",
           "hiso.tasks.quadratic", "transformers", "transformers.models.opt.modeling_opt",
           "transformers.models.llama.modeling_llama", "peft", "datasets", "pandas")


def _import_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_PREFIXES)}


def _source_mtime() -> float:
    root = Path(__file__).resolve().parent
    return max(p.stat().st_mtime for p in root.rglob("*.py"))


# ------------------------------------------------------------------------------------------------- server
def _child(sockets: list[socket.socket], request: dict, fds: list[int]) -> None:
    """In the forked child: become the client's process (fds, cwd, env, argv) and run the command."""
    code = 1
    try:
        for s in sockets:  # the listener and every client connection belong to the server
            s.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        os.chdir(request["cwd"])
        env = dict(request["env"])
        env.pop(SOCKET_ENV, None)
        env["HISO_WARM_CHILD"] = str(os.getppid())  # run.json records the runner
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["python -m hiso", *request["argv"]]
        from hiso.__main__ import _main
        code = _main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - the child reports any failure as a cold process would
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _needs_device(argv: list[str], cwd: str) -> str | None:
    """Why a job must own its process (run cold): it takes a GPU slot, or its task runs on a device other than the
    CPU.  Read from the arguments and the config file's text, without asking CUDA anything."""
    if "--gpu-slot" in argv:
        return "the job takes a GPU slot"
    device = None
    for k, a in enumerate(argv[:-1]):
        if a == "--set" and argv[k + 1].replace(" ", "").startswith("task.device="):
            device = argv[k + 1].split("=", 1)[1].strip()
        elif a == "--config" and device is None:
            try:
                import yaml
                data = yaml.safe_load((Path(cwd) / argv[k + 1]).read_text())
                device = ((data or {}).get("task") or {}).get("device") if isinstance(data, dict) else None
            except Exception:  # noqa: BLE001 - an unreadable config: the child reports it as a cold run would
                device = None
    if device not in (None, "cpu"):
        return f"task.device is {device}: a process that uses CUDA must not be forked from the server"
    return None


def serve(path: str, idle_exit: float = 0.0) -> int:
    import importlib
    import threading
    started_env = _import_env(dict(os.environ))  # before the imports, some of which set variables of their own
    for name in PRELOAD:
        importlib.import_module(name)
    import torch
    # no CUDA probe here: is_available() or device_count() before a fork leaves every child unable to use CUDA;
    # is_initialized() only reads torch's own flag
    if torch.cuda.is_initialized():  # pragma: no cover - a child could not use it
        print("warm runner: CUDA was initialised while importing; refusing to fork", file=sys.stderr)
        return 1
    if threading.active_count() != 1:
        print(f"warm runner: {threading.active_count()} threads after imports; refusing to fork", file=sys.stderr)
        return 1
    started_at = time.time()
    loaded_mtime = _source_mtime()
    parent = os.getppid()
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    children: dict[int, socket.socket] = {}
    stop = False

    def on_term(_sig, _frame):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    last = time.time()
    print(f"warm runner: serving on {path} (pid {os.getpid()}, imports took {started_at - START:.1f} s)",
          file=sys.stderr, flush=True)
    try:
        while not stop and os.getppid() == parent and os.path.exists(path):
            if idle_exit and not children and time.time() - last > idle_exit:
                break
            readable, _, _ = select.select([listener, *children.values()], [], [], 0.5)
            for conn in readable:
                if conn is listener:
                    last = time.time()
                    _accept(listener, children, started_env, loaded_mtime)
                else:  # a client closed its end while its child runs: it was killed, so stop the child
                    pid = next(p for p, c in children.items() if c is conn)
                    if not conn.recv(1, socket.MSG_PEEK):
                        _kill(pid)
            _reap(children)
    finally:
        for pid in list(children):
            _kill(pid)
        deadline = time.time() + 10
        while children and time.time() < deadline:
            _reap(children)
            time.sleep(0.05)
        listener.close()
        if os.path.exists(path):
            os.unlink(path)
    return 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _accept(listener, children, started_env, loaded_mtime) -> None:
    conn, _ = listener.accept()
    try:
        request, fds = _recv(conn, with_fds=3)
    except OSError:
        conn.close()
        return
    if request is None or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    reason = _needs_device(request["argv"], request["cwd"])
    if not reason and _import_env(request["env"]) != started_env:
        changed = sorted(set(_import_env(request["env"]).items()) ^ set(started_env.items()))
        reason = f"import-time environment differs: {sorted({k for k, _ in changed})}"
    elif not reason and _source_mtime() != loaded_mtime:
        reason = "the suite's source changed after the server imported it"
    if reason:
        for fd in fds:
            os.close(fd)
        _send(conn, {"cold": reason})
        conn.close()
        return
    pid = os.fork()
    if pid == 0:
        _child([listener, conn, *children.values()], request, fds)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    children[pid] = conn


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        try:
            _send(conn, {"exit": code if code >= 0 else 128 - code})
        except OSError:
            pass
        conn.close()


START = time.time()


class WorkflowServer:
    """The server of one snakemake invocation (Snakefile onstart / onsuccess / onerror): started with the
    thread variables snakemake gives a one-thread job (a job with other values runs cold; libraries read them
    when they load), its socket exported as $HISO_WARM_SOCKET for the jobs, stopped and removed at the end."""

    THREAD_VARS = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

    def __init__(self):
        self.proc = None
        self.folder = None

    def start(self, timeout: float = 120.0) -> None:
        import subprocess
        import tempfile
        self.folder = tempfile.mkdtemp(prefix="hiso-warm-")
        sock = os.path.join(self.folder, "runner.sock")
        env = dict(os.environ, **{k: "1" for k in self.THREAD_VARS})
        with open(os.path.join(self.folder, "runner.log"), "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "hiso.warm", "serve", "--socket", sock],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        deadline = time.time() + timeout
        while not os.path.exists(sock) and self.proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)  # the imports; without the server every job simply runs cold
        if os.path.exists(sock):
            os.environ[SOCKET_ENV] = sock  # the jobs inherit it

    def stop(self) -> None:
        import shutil
        import subprocess
        os.environ.pop(SOCKET_ENV, None)
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hiso.warm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="import the suite once and fork a child per run request")
    s.add_argument("--socket", required=True, help="the Unix socket to listen on (clients read $HISO_WARM_SOCKET)")
    s.add_argument("--idle-exit", type=float, default=0.0, help="exit after this many idle seconds (0: never)")
    args = ap.parse_args(argv)
    return serve(args.socket, args.idle_exit)


if __name__ == "__main__":
    sys.exit(main())
