"""Single-party references (no federation, no communication): the MeZO family and first-order fine-tuning.

    mezo           ZO-SGD with in-place seeded perturbations (Malladi et al. 2023): no d-sized buffer
    mezo_momentum  ZO-SGD with heavy-ball momentum (one d-sized buffer)
    zo_adam        Adam on the ZO gradient estimate (two d-sized buffers)
    hizoo          HiZOO (Zhao et al. 2024): diagonal Hessian Sigma^-1 learned from second differences
                   s = [f(x+mu z) + f(x-mu z) - 2 f(x)] / (2 mu^2), z = Sigma^{1/2} u, 2P + 1 passes per step:
                   h <- (1 - alpha) h + alpha |s| h u^2,   x <- x - lr g z
    fo             first-order fine-tuning (SGD or Adam): the upper reference

One round = federation.local_steps steps; each step draws its batch from a uniformly chosen client's data
(with federation.num_clients: 1, the usual single-party setting, that is the whole training set).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from hiso.contracts import RoundRow
from hiso.curvature import Diagonal, Identity
from hiso.estimators import estimate
from hiso.federation import batch_rng
from hiso.methods import register_method
from hiso.perturb import Scratch, StepDirections, step_


@dataclass
class SinglePartyOptions:
    momentum: float = 0.9  # mezo_momentum
    beta1: float = 0.9  # zo_adam / fo adam
    beta2: float = 0.999
    adam_eps: float = 1e-8
    hessian_smooth: float = 1e-6  # hizoo alpha
    optimizer: Literal["sgd", "adam"] = "sgd"  # fo


class SingleParty:
    def __init__(self, cfg, task, opts: SinglePartyOptions, rule: str):
        f = cfg.federation
        self.cfg, self.task, self.opts, self.rule, self.seed = cfg, task, opts, rule, cfg.seed
        self.tau, self.P, self.mu, self.lr, self.bs, self.M = (f.local_steps, f.perturbations, f.mu, f.lr,
                                                               f.batch_size, f.num_clients)
        self.difference = f.difference
        self.params = task.params()
        self.scratch = Scratch(self.params)
        self.curv = (Diagonal(eps=0.0) if rule == "hizoo" else Identity()).bind(self.params)
        self.state = {"step": 0, "m": [], "v": []}
        if rule in ("mezo_momentum", "zo_adam") or (rule == "fo" and opts.optimizer == "adam"):
            self.state["m"] = [torch.zeros_like(p) for p in self.params]
        if rule == "zo_adam" or (rule == "fo" and opts.optimizer == "adam"):
            self.state["v"] = [torch.zeros_like(p) for p in self.params]
        if rule == "fo":
            if not hasattr(task, "grad_loss"):
                raise ValueError(f"method fo needs gradients; task {cfg.task['name']} has no grad_loss")
            for p in self.params:
                p.requires_grad_(True)
        self._rounds = 0

    @property
    def rounds_done(self) -> int:
        return self._rounds

    def global_params(self):
        return self.params

    def load_server_model(self):  # the single party's model is the working model
        pass

    @torch.no_grad()
    def _apply(self, i: int, p: torch.Tensor, g: torch.Tensor, start: int = 0) -> None:
        """Optimizer step on entries [start, start + g.numel()) of tensor i (flat when a piece; p and its
        optimizer state are sliced alike) given its gradient (estimate) g."""
        o, st = self.opts, self.state
        sl = slice(start, start + g.numel())

        def part(t: torch.Tensor) -> torch.Tensor:
            return t.view(-1)[sl].view(g.shape) if g.shape != t.shape else t

        p = part(p)
        if self.rule == "mezo_momentum":
            m = part(st["m"][i])
            m.mul_(o.momentum).add_(g)
            p.sub_(m, alpha=self.lr)
        elif self.rule == "zo_adam" or (self.rule == "fo" and o.optimizer == "adam"):
            t = st["step"]
            m, v = part(st["m"][i]), part(st["v"][i])
            m.mul_(o.beta1).add_(g, alpha=1 - o.beta1)
            v.mul_(o.beta2).addcmul_(g, g, value=1 - o.beta2)
            mhat = m / (1 - o.beta1 ** t)
            vhat = v / (1 - o.beta2 ** t)
            p.sub_(self.lr * mhat / (vhat.sqrt() + o.adam_eps))
        else:
            p.sub_(g, alpha=self.lr)

    def _zo_step(self, batch, seed) -> tuple[float, int]:
        dirs = StepDirections(seed, self.P, self.params, self.curv, self.scratch)
        loss = lambda: self.task.loss(batch)  # noqa: E731
        if self.rule == "hizoo":
            return self._hizoo_step(dirs, loss)
        est = estimate(self.params, loss, dirs, self.mu, self.difference)
        coeffs = est.scalars / np.float32(self.P)
        if self.rule == "mezo":
            step_(self.params, dirs, coeffs, self.lr, weight_decay=self.cfg.federation.weight_decay)
        else:
            step_(self.params, dirs, coeffs, 0.0, observe=lambda i, start, d, _: self._apply(i, self.params[i], d, start))
        return est.loss, est.forward_passes

    @torch.no_grad()
    def _hizoo_step(self, dirs, loss) -> tuple[float, int]:
        from hiso.estimators import estimate
        est = estimate(self.params, loss, dirs, self.mu, "central", second=True)
        g, s, f0 = est.scalars, np.abs(est.second), est.loss
        step_(self.params, dirs, g / np.float32(self.P), self.lr)
        # h <- (1 - alpha) h + alpha h * mean_j(s_j u_j^2), with the raw draws u^2 = z^2 h (h not yet changed)
        acc = [torch.zeros_like(h) for h in self.curv.state]
        for j in range(self.P):
            for i, start, z in dirs(j):
                sl = slice(start, start + z.numel())
                acc[i].view(-1)[sl].add_(z.square() * self.curv.state[i].view(-1)[sl], alpha=float(s[j]) / self.P)
        a = self.opts.hessian_smooth
        for i, (h, u2s) in enumerate(zip(self.curv.state, acc)):
            h.mul_(1 - a + a * u2s)
            self.curv._check(i, h)
        return float(f0), 2 * self.P + 1

    def run_round(self) -> dict:
        r = self._rounds
        rng = batch_rng(self.seed, r, 0)
        losses, passes, backward = [], 0, 0
        for _ in range(self.tau):
            client = int(rng.integers(self.M))
            batch = self.task.batch(client, rng, self.bs)
            self.state["step"] += 1
            if self.rule == "fo":
                loss = self.task.grad_loss(batch)
                grads = torch.autograd.grad(loss, self.params)
                for i, (p, g) in enumerate(zip(self.params, grads)):
                    self._apply(i, p, g)
                losses.append(float(loss.detach()))
                passes += 1
                backward += 1
            else:
                l0, n = self._zo_step(batch, int(rng.integers(0, 2**32)))
                losses.append(l0)
                passes += n
        self._rounds += 1
        extra = {"backward_passes": backward} if backward else {}
        return RoundRow(r + 1, losses[0], 0, 0, 0, 0, 0, passes, rejected=0, accepted=1, extra=extra).as_dict()

    def state_dict(self) -> dict:
        # references, not clones: the runner saves them at once, and torch.save copies each storage to the host
        return {"params": [p.detach() for p in self.params], "rounds": self._rounds,
                "step": self.state["step"], "m": list(self.state["m"]), "v": list(self.state["v"]),
                "h": list(self.curv.state)}

    @torch.no_grad()
    def load_state_dict(self, sd: dict) -> None:
        for p, q in zip(self.params, sd["params"], strict=True):
            p.copy_(q)
        self._rounds, self.state["step"] = sd["rounds"], sd["step"]
        for a, b in zip(self.state["m"] + self.state["v"] + self.curv.state, sd["m"] + sd["v"] + sd["h"]):
            a.copy_(b)


DISPLAY = {"mezo": ("MeZO", "#ff7f0e"), "mezo_momentum": ("MeZO + momentum", "#ffbb78"),
           "zo_adam": ("ZO-Adam", "#c5b0d5"), "hizoo": ("HiZOO", "#c49c94"), "fo": ("first order", "#000000")}
for _rule, (_label, _color) in DISPLAY.items():
    register_method(_rule, lambda cfg, task, opts, rule=_rule: SingleParty(cfg, task, opts, rule),
                    SinglePartyOptions, doc=f"single-party {_rule}", weight_decay=_rule == "mezo", label=_label,
                    color=_color)
