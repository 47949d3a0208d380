"""The GPU machine's image, as far as imports go: its python3 has torch, transformers, peft, numpy and pandas but
none of the suite's workflow and data packages.  tests/test_gpu_check.py puts this folder first on PYTHONPATH
so the device script's rehearsal fails here if the check imports one of them."""
import sys

BLOCKED = {"datasets", "flwr", "snakemake", "gguf"}


class _NotOnTheImage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not on the GPU machine's image")
        return None


sys.meta_path.insert(0, _NotOnTheImage())
