"""Hub models and data sets for compute nodes without internet: a mirror folder, pinned revisions, and
`python -m hiso fetch`.

A mirror is a plain folder:

    <mirror>/models/<repo>/               the model repository at one revision (snapshot_download)
    <mirror>/data/<repo>/<config>/        the data set, every split (DatasetDict.save_to_disk)
    <mirror>/hub-lock.json                {"models": {repo: commit}, "datasets": {"repo/config": commit}}

`python -m hiso run --hub-mirror DIR` (or HISO_HUB_MIRROR=DIR; the workflow's `hub_mirror:` key) makes every
hub model and data set load from the mirror and nothing else: a missing entry is an error that names the
fetch command, never a silent download.  Tiny and packaged models need no mirror.

    python -m hiso fetch --configfile workflows/config/paper.yaml --to /shared/hiso-hub           # login node
    python -m hiso fetch --configfile ... --to DIR --lock OLD/hub-lock.json   # the same commits again
    python -m hiso fetch --configfile ... --to DIR --from FIXTURES           # offline, from another mirror

`fetch` resolves each repository's revision (the lock's commit, else the head of `main`) to a commit hash
once, downloads exactly that commit and records it in `hub-lock.json`; runs record the lock in run.json.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .io import atomic_write, build_dir

MIRROR_ENV = "HISO_HUB_MIRROR"
LOCK = "hub-lock.json"
MODEL_IGNORE = ["*.h5", "*.msgpack", "tf_model*", "flax_model*", "*.ot", "original/*", "*.onnx", "onnx/*"]


class MirrorMissing(RuntimeError):
    """The mirror lacks a model or data set that a run needs."""


def mirror() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def data_dir(root: Path, repo: str, config: str | None) -> Path:
    return root / "data" / repo / (config or "default")


def model_dir(root: Path, repo: str) -> Path:
    return root / "models" / repo


def read_lock(root: Path | None) -> dict:
    path = (root or Path()) / LOCK
    if root is None or not path.exists():
        return {"models": {}, "datasets": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MirrorMissing(f"{path} is not readable JSON ({e}); rerun python -m hiso fetch") from None


def _missing(what: str, root: Path) -> MirrorMissing:
    return MirrorMissing(f"{what} is not in the hub mirror {root} ({MIRROR_ENV}); fill it on a machine with "
                         f"internet: python -m hiso fetch --configfile <tier config> --to {root}")


def mirrored_model(repo: str) -> Path | None:
    """The mirror's folder of a hub model, None without a mirror (MirrorMissing when the mirror lacks it)."""
    root = mirror()
    if root is None:
        return None
    path = model_dir(root, repo)
    if not (path / "config.json").exists():
        raise _missing(f"model {repo}", root)
    return path


def mirrored_split(repo: str, config: str | None, split: str) -> list[dict] | None:
    """One split of a data set from the mirror, None without a mirror."""
    root = mirror()
    if root is None:
        return None
    path = data_dir(root, repo, config)
    if not path.exists():
        raise _missing(f"data set {repo}/{config}", root)
    import datasets
    dd = datasets.load_from_disk(str(path))
    if split not in dd:
        raise MirrorMissing(f"{path} has no split {split!r} (has {', '.join(dd)})")
    return list(dd[split])


def save_atomically(ds, path: Path) -> None:
    """save_to_disk through a temp folder and a rename (replacing what was there): an interrupted fetch leaves
    nothing half-made."""
    import datasets
    datasets.disable_progress_bars()
    build_dir(path, lambda tmp: ds.save_to_disk(str(tmp)), replace=True)


def _resolve(repo: str, kind: str, revision: str | None) -> str:
    """A revision (branch, tag or commit) -> its commit hash on the hub."""
    from huggingface_hub import HfApi
    info = HfApi().repo_info(repo, repo_type=kind, revision=revision or "main")
    return info.sha


def fetch(models: list[str], data: list[tuple[str, str | None]], to: Path, source: Path | None = None,
          lock: dict | None = None, log=print) -> dict:
    """Fill the mirror `to` with every model and data set, from the hub at the lock's commits (else main's
    head, resolved once) or from another mirror `source`; write and return hub-lock.json."""
    lock = {"models": dict((lock or {}).get("models", {})), "datasets": dict((lock or {}).get("datasets", {}))}
    src_lock = read_lock(source) if source else None
    to.mkdir(parents=True, exist_ok=True)
    for repo in models:
        dest = model_dir(to, repo)
        if source:
            src = model_dir(source, repo)
            if not (src / "config.json").exists():
                raise _missing(f"model {repo}", source)
            if not dest.exists():
                shutil.copytree(src, dest)
            lock["models"][repo] = src_lock["models"].get(repo)
        else:
            from huggingface_hub import snapshot_download
            sha = _resolve(repo, "model", lock["models"].get(repo))
            snapshot_download(repo, revision=sha, local_dir=dest, ignore_patterns=MODEL_IGNORE)
            lock["models"][repo] = sha
        log(f"model {repo} @ {lock['models'][repo]} -> {dest}")
    import datasets
    for repo, config in data:
        dest, key = data_dir(to, repo, config), f"{repo}/{config or 'default'}"
        if source:
            src = data_dir(source, repo, config)
            if not src.exists():
                raise _missing(f"data set {key}", source)
            save_atomically(datasets.load_from_disk(str(src)), dest)
            lock["datasets"][key] = src_lock["datasets"].get(key)
        else:
            sha = _resolve(repo, "dataset", lock["datasets"].get(key))
            save_atomically(datasets.load_dataset(repo, config, revision=sha), dest)
            lock["datasets"][key] = sha
        log(f"data {key} @ {lock['datasets'][key]} -> {dest}")
    atomic_write(to / LOCK, json.dumps(lock, indent=1, sort_keys=True) + "\n")
    return lock
