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
    """Clients download the full model, run local steps, upload their model delta; the server averages what it
    decodes and applies `server_update`.  Subclasses define `local_update`.

    Uploads travel through the codec pair `encode_upload(r, client, delta) -> (bytes, payload bytes)` and
    `decode_upload(bytes, r, client) -> delta`.  Without an override the upload is the fp32 delta, counted as
    VectorMessage's len(encode()) = 20 + 4 d bytes without building a d-sized bytes object (tests/test_protocol.py
    checks the count); a method that compresses (signs, top-k, quantised deltas) overrides both, and the
    metrics then carry len() of its messages."""

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
        up = up_payload = 0
        for c in sampled:
            self.load_server_model()  # downlink: the full model
            loss0, count = self.local_update(c, r, batch_rng(self.seed, r, c))
            losses.append(loss0)
            for k, v in count.items():
                counters[k] = counters.get(k, 0) + v
            with torch.no_grad():
                if self.compresses():
                    data, payload = self.encode_upload(r, c, [s - w for s, w in zip(self.server, self.work)])
                    up, up_payload = up + len(data), up_payload + payload
                    for a, x in zip(acc, self.decode_upload(data, r, c)):
                        a.add_(x.reshape(a.shape))
                    continue
                for a, s, w in zip(acc, self.server, self.work):
                    a.add_(torch.sub(s, w, out=self._tmp(s, 1)[0]))  # uplink: the full delta
                up, up_payload = up + vec_bytes, up_payload + 4 * self.d
        self.server_update([a.div_(len(sampled)) for a in acc])
        self._rounds += 1
        n = len(sampled)
        return RoundRow(r + 1, float(np.mean(losses)), up, up_payload, n * vec_bytes, 0, 0, 0,
                        rejected=0, accepted=n, extra=counters).as_dict()

    def compresses(self) -> bool:
        """Whether the method overrides the fp32 upload codec."""
        return type(self).encode_upload is not VectorFederation.encode_upload

    def encode_upload(self, r: int, client: int, delta: list[torch.Tensor]) -> tuple[bytes, int]:
        """A client's upload (delta = server model - client model after its local steps) as bytes, and how many
        of them are payload.  The default, fp32 VectorMessage, is counted without being built (run_round)."""
        msg = VectorMessage(r, client, torch.cat([d.reshape(-1) for d in delta]).cpu().numpy())
        return msg.encode(), 4 * self.d

    def decode_upload(self, data: bytes, r: int, client: int) -> list[torch.Tensor]:
        """What the server reads from a client's upload: the delta, shaped like the model."""
        flat = torch.from_numpy(VectorMessage.decode(data).values).to(self.server[0].device)
        return [x.view(p.shape) for x, p in zip(flat.split([p.numel() for p in self.server]), self.server)]

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
