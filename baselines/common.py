"""What the vector-communicating federated baselines share: sampling, working model, bytes, state."""
from __future__ import annotations

import numpy as np
import torch

from hiso.contracts import RoundRow
from hiso.federation import batch_rng, round_rng
from hiso.protocol import VectorMessage


def sample_clients(seed: int, r: int, num_clients: int, per_round: int) -> list[int]:
    """The same clients the scalar-only federation samples in round r (identical draws)."""
    return sorted(int(c) for c in round_rng(seed, r).choice(num_clients, per_round, replace=False))


class VectorFederation:
    """Clients download the full model, run local steps, upload the full model delta (d fp32 floats);
    the server averages the deltas and applies `server_update`.  Subclasses define `local_update`."""

    def __init__(self, cfg, task):
        f = cfg.federation
        self.cfg, self.task, self.seed = cfg, task, cfg.seed
        self.M, self.per_round, self.tau, self.lr, self.batch_size = (f.num_clients, f.clients_per_round, f.local_steps,
                                                             f.lr, f.batch_size)
        self.work = task.params()
        self.server = [p.detach().clone() for p in self.work]
        self._acc, self._scratch = None, []
        self.d = sum(p.numel() for p in self.work)
        self._rounds = 0

    @property
    def rounds_done(self) -> int:
        return self._rounds

    def global_params(self) -> list[torch.Tensor]:
        return self.server

    @torch.no_grad()
    def load_server_model(self) -> None:
        for w, s in zip(self.work, self.server):
            w.copy_(s)

    def local_update(self, client: int, r: int, rng: np.random.Generator) -> tuple[float, dict]:
        """Run the client's local steps on self.work; return (loss at the first step, counters)."""
        raise NotImplementedError

    @torch.no_grad()
    def server_update(self, mean_delta: list[torch.Tensor]) -> None:
        """FedAvg: x <- x - mean(x_server - x_client)."""
        for s, d in zip(self.server, mean_delta):
            s.sub_(d)

    def run_round(self) -> dict:
        r = self._rounds
        sampled = sample_clients(self.seed, r, self.M, self.per_round)
        if self._acc is None:  # the uplink sum: allocated once, zeroed each round
            self._acc = [torch.zeros_like(p) for p in self.server]
        acc = [a.zero_() for a in self._acc]
        losses, counters = [], {}
        vec_bytes = VectorMessage.wire_size(self.d)
        for c in sampled:
            self.load_server_model()  # downlink: the full model
            loss0, count = self.local_update(c, r, batch_rng(self.seed, r, c))
            losses.append(loss0)
            for k, v in count.items():
                counters[k] = counters.get(k, 0) + v
            with torch.no_grad():
                for a, s, w in zip(acc, self.server, self.work):
                    a.add_(torch.sub(s, w, out=self._tmp(s, 1)[0]))  # uplink: the full delta
        self.server_update([a.div_(len(sampled)) for a in acc])
        self._rounds += 1
        n = len(sampled)
        return RoundRow(r + 1, float(np.mean(losses)), n * vec_bytes, n * 4 * self.d, n * vec_bytes, 0, 0, 0,
                        rejected=0, accepted=n, extra=counters).as_dict()

    def _tmp(self, like: torch.Tensor, k: int) -> list[torch.Tensor]:
        """k scratch tensors shaped like `like`: views of buffers the size of the largest trainable tensor,
        allocated once (never d-sized per round)."""
        n = max(p.numel() for p in self.server)
        if len(self._scratch) < k:
            self._scratch += [torch.empty(n, dtype=like.dtype, device=like.device)
                              for _ in range(k - len(self._scratch))]
        return [b[:like.numel()].view(like.shape) for b in self._scratch[:k]]

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, sd: dict) -> None:
        pass

    def state_dict(self) -> dict:
        # references, not clones: the runner saves them at once, and torch.save copies each storage to the host
        return {"server": [p.detach() for p in self.server], "rounds": self._rounds, "extra": self.extra_state()}

    @torch.no_grad()
    def load_state_dict(self, sd: dict) -> None:
        for p, q in zip(self.server, sd["server"], strict=True):
            p.copy_(q)
        self._rounds = sd["rounds"]
        self.load_extra_state(sd["extra"])
