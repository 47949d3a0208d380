"""First-order federated baselines: FedAvg and the adaptive server optimizers of Reddi et al. (2021).

Clients run tau local SGD steps (federation.lr) and upload their model delta; the server averages
Delta = mean_i (x - x_i) and updates
    fedavg:     x <- x - server_lr * Delta                                  (server_lr default 1)
    fedadam:    m <- b1 m + (1-b1) Delta,  v <- b2 v + (1-b2) Delta^2,       x <- x - server_lr * m / (sqrt(v) + tau)
    fedyogi:    v <- v - (1-b2) Delta^2 sign(v - Delta^2)
    fedadagrad: v <- v + Delta^2
(b1 0.9, b2 0.999, tau 1e-8 as in the authors' code; server_lr default = federation.lr, as there).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hiso.methods import register_method

from .common import VectorFederation


@dataclass
class FedOptOptions:
    server_lr: float | None = None  # default: 1.0 for fedavg, federation.lr for the adaptive ones
    beta1: float = 0.9
    beta2: float = 0.999
    tau: float = 1e-8


class FirstOrderFederation(VectorFederation):
    def __init__(self, cfg, task, opts: FedOptOptions, rule: str):
        super().__init__(cfg, task)
        if not hasattr(task, "grad_loss"):
            raise ValueError(f"method {rule} needs gradients; task {cfg.task['name']} has no grad_loss")
        for p in self.work:
            p.requires_grad_(True)
        self.rule, self.opts = rule, opts
        self.server_lr = opts.server_lr if opts.server_lr is not None else (1.0 if rule == "fedavg" else cfg.federation.lr)
        self.m = [torch.zeros_like(p) for p in self.server] if rule != "fedavg" else []
        self.v = [torch.zeros_like(p) for p in self.server] if rule != "fedavg" else []

    def local_update(self, client, r, rng):
        loss0 = float("nan")
        for k in range(self.tau):
            loss = self.task.grad_loss(self.task.batch(client, rng, self.batch_size))
            grads = torch.autograd.grad(loss, self.work)
            with torch.no_grad():
                for p, g in zip(self.work, grads):
                    p.sub_(g, alpha=self.lr)
            if k == 0:
                loss0 = float(loss.detach())
        return loss0, {"forward_passes": self.tau, "backward_passes": self.tau}

    @torch.no_grad()
    def server_update(self, delta):
        if self.rule == "fedavg":
            for s, d in zip(self.server, delta):
                s.sub_(d, alpha=self.server_lr)
            return
        o = self.opts
        for s, d, m, v in zip(self.server, delta, self.m, self.v):
            # the same ops in the same order as the textbook expressions, into three scratch pieces (the largest
            # tensor's size, allocated once) instead of d-sized temporaries each round
            d2, t2, t3 = self._tmp(d, 3)
            m.mul_(o.beta1).add_(d, alpha=1 - o.beta1)
            torch.mul(d, d, out=d2)
            if self.rule == "fedadam":
                v.mul_(o.beta2).add_(d2, alpha=1 - o.beta2)
            elif self.rule == "fedyogi":  # v -= (1 - beta2) * d2 * sign(v - d2)
                torch.sign(torch.sub(v, d2, out=t2), out=t2)
                v.sub_(torch.mul(d2, 1 - o.beta2, out=t3).mul_(t2))
            else:  # fedadagrad
                v.add_(d2)
            torch.sqrt(v, out=t2).add_(o.tau)  # s -= server_lr * m / (sqrt(v) + tau)
            s.sub_(torch.mul(m, self.server_lr, out=t3).div_(t2))

    def extra_state(self):
        return {"m": list(self.m), "v": list(self.v)}  # references: torch.save copies them to the host

    @torch.no_grad()
    def load_extra_state(self, sd):
        for a, b in zip(self.m + self.v, sd["m"] + sd["v"]):
            a.copy_(b)


DISPLAY = {"fedavg": ("FedAvg", "#7f7f7f"), "fedadam": ("FedAdam", "#bcbd22"), "fedyogi": ("FedYogi", "#17becf"),
           "fedadagrad": ("FedAdagrad", "#e377c2")}
for _rule, (_label, _color) in DISPLAY.items():
    register_method(_rule, lambda cfg, task, opts, rule=_rule: FirstOrderFederation(cfg, task, opts, rule),
                    FedOptOptions, doc=f"first-order {_rule}: full model up and down", label=_label, color=_color)
