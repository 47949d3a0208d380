"""ZO-SignSGD with majority vote (Liu et al. 2019, ZO-signSGD; the vote of Bernstein et al. 2018): each client
estimates the gradient from P private random directions, takes tau local ZO-SGD steps, and uploads only the
sign of its model delta, one bit per coordinate; the server steps by server_lr along the sign of the clients'
sum of signs.  Downlink: the full model, as FedZO.

The worked example of docs/extending.md: one file (this one), its test (tests/test_zo_signsgd.py) and its tier
(workflows/config/zo_signsgd.yaml).  The clients' local steps are FedZO's (baselines/fedzo.py, the template
for any method that uploads a vector; its `local_update` shows the ZO building blocks: `StepDirections`
regenerates a step's P directions from a seed, `estimate` runs the forward passes of the finite differences,
`step_` applies x <- x - lr * sum_j s_j z_j / P).  This file adds a compressed upload by overriding the codec pair
`encode_upload` / `decode_upload`, so the bytes in the metrics are len() of what it encodes, and the server's
vote.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

from hiso.methods import register_method

from .fedzo import FedZO

SIGN_HEAD = struct.Struct("<4sIIQ")  # magic, round, client, coordinates


@dataclass
class SignOptions:
    server_lr: float | None = None  # the server's step along the vote (default: federation.lr)


def check(cfg, opts: SignOptions) -> None:
    """Refusals before any compute (shown as config errors naming the key)."""
    if opts.server_lr is not None and not opts.server_lr > 0:
        raise ValueError(f"method_options.server_lr must be > 0, got {opts.server_lr!r}")


class ZOSignSGD(FedZO):
    """FedZO's local steps (private directions: only the signs of their result travel), a 1-bit upload and the
    server's majority vote."""

    def __init__(self, cfg, task, opts: SignOptions):
        super().__init__(cfg, task, opts)
        self.server_lr = opts.server_lr if opts.server_lr is not None else cfg.federation.lr

    def encode_upload(self, r, client, delta):
        """The delta's signs, packed 8 to a byte (a zero counts as +); returns (message, payload bytes)."""
        bits = np.packbits(torch.cat([d.reshape(-1) for d in delta]).ge(0).cpu().numpy())
        return SIGN_HEAD.pack(b"HSSG", r, client, self.d) + bits.tobytes(), bits.nbytes

    def decode_upload(self, data, r, client):
        magic, _, _, n = SIGN_HEAD.unpack_from(data)
        if magic != b"HSSG" or n != self.d or len(data) != SIGN_HEAD.size + (n + 7) // 8:
            raise ValueError(f"malformed sign upload from client {client} in round {r}")
        signs = np.unpackbits(np.frombuffer(data, np.uint8, offset=SIGN_HEAD.size), count=n).astype(np.float32)
        flat = torch.from_numpy(2 * signs - 1).to(self.server[0].device)
        return list(flat.split([p.numel() for p in self.server]))

    @torch.no_grad()
    def server_update(self, mean_delta):
        """Majority vote: x <- x - server_lr * sign(sum of the clients' signs) (a tie moves nothing)."""
        for s, d in zip(self.server, mean_delta):
            s.sub_(d.reshape(s.shape).sign(), alpha=self.server_lr)


register_method("zo_signsgd", lambda cfg, task, opts: ZOSignSGD(cfg, task, opts), SignOptions, check=check,
                label="ZO-SignSGD (majority vote)",
                doc="ZO-SignSGD with majority vote: 1 bit per coordinate up, full model down")
