"""Server, clients and the round loop of scalar-only federated ZO (docs/algorithm.md).

One round r:
  1. the server samples m of M clients and draws tau seeds (both from (run seed, r): no hidden RNG state);
  2. each sampled client downloads a RoundStart (seeds + every record it missed) and catches up by replaying;
  3. it runs tau local ZO steps along z = H^{-1/2} u and uploads tau x P scalars;
  4. the server validates each upload (rejects malformed, non-finite or absurd ones with a logged reason),
     aggregates (hiso/aggregators.py), appends the record to the log and replays it on its model.

Clients are stateless between rounds: the simulator keeps one working copy of the model, loaded with the
caught-up state of whichever client is computing, so memory does not grow with the number of clients.
With verify_replay=True every client instead keeps its own replica and really replays the bytes it
downloaded; the replica must then equal the server model (max |diff| <= 1e-6) and curvature (bitwise).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from . import streams
from .contracts import RoundRow
from .curvature import Curvature
from .estimators import estimate
from .faults import corrupt, faulty_set
from .layout import chunk_of, fingerprint, resolve, trainable
from .perturb import Scratch, StepDirections, step_
from .protocol import RoundRecord, RoundStart, Upload
from .server import Server, Wire, apply_record

log = logging.getLogger("hiso.federation")


class ReplayMismatch(AssertionError):
    """A caught-up client disagrees with the server: the scalar-only protocol is broken."""


def round_rng(seed: int, r: int) -> np.random.Generator:
    return streams.rng(seed, streams.ROUND, r)


def batch_rng(seed: int, r: int, client: int) -> np.random.Generator:
    return streams.rng(seed, streams.BATCH, r, client)


def dropped_clients(metrics_csv: str, num_clients: int | None = None) -> dict[int, set[int]]:
    """round (1-based, as in metrics.csv) -> the clients whose upload never arrived, from a deployed run's
    `dropped_clients` column (JSON lists of client ids).  ValueError, naming the file and row, for anything else:
    no such column, a round that is not a positive integer, a cell that is not a JSON list of ids in
    [0, num_clients), or a file in which every round drops every client (nothing would ever train)."""
    import csv
    import json
    try:
        with open(metrics_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{metrics_csv} is not a readable CSV ({type(e).__name__})") from None
    if not rows or "dropped_clients" not in rows[0] or "round" not in rows[0]:
        raise ValueError(f"{metrics_csv} has no round and dropped_clients columns (not a deployed run's metrics)")
    out = {}
    for line, r in enumerate(rows, start=2):
        where = f"{metrics_csv}, line {line}"
        if not (r["round"] or "").strip().isdigit() or int(r["round"]) < 1:
            raise ValueError(f"{where}: round {r['round']!r} is not a positive integer")
        try:
            ids = json.loads(r["dropped_clients"] or "[]")
        except ValueError:
            raise ValueError(f"{where}: dropped_clients {r['dropped_clients']!r} is not JSON") from None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"{where}: dropped_clients {r['dropped_clients']!r} is not a list of client ids")
        if num_clients is not None and any(not 0 <= i < num_clients for i in ids):
            raise ValueError(f"{where}: dropped_clients {ids} names a client outside 0..{num_clients - 1} "
                             f"(federation.num_clients is {num_clients})")
        out[int(r["round"])] = set(ids)
    if num_clients is not None and all(len(ids) >= num_clients for ids in out.values()):
        raise ValueError(f"{metrics_csv}: every round drops every one of the {num_clients} clients; the run would "
                         "never train")
    return out


@dataclass
class Reply:
    """A client's answer to one round: the bytes of its upload (empty: none arrived) and what it measured."""

    payload: bytes
    loss: float
    forward_passes: int
    replay_diff: float = 0.0
    mu: float = 0.0


@dataclass
class ClientState:
    """What a simulated client keeps between rounds: its log position (and, when verifying, a replica)."""

    id: int
    synced: int = 0
    params: list[torch.Tensor] | None = None
    curvature: Curvature | None = None


class Federation:
    """The round loop over a task.  `task.params()` is the one working model every client computes on."""

    replay_tolerance = 1e-6  # max |x_client - x_server| after catch-up (replay is in fact bit-exact)

    def __init__(self, task, curvature_factory, fed, seed: int = 0, perturb=None):
        """`fed`: the config's federation section (hiso.config.FederationConfig, already validated); `perturb`: its
        perturb section (layout and chunk, hiso/layout.py; None: the defaults)."""
        if not 1 <= fed.clients_per_round <= fed.num_clients:
            raise ValueError(f"clients_per_round must be in [1, num_clients={fed.num_clients}], "
                             f"got {fed.clients_per_round}")
        if fed.mu_scale not in ("none", "rms"):
            raise ValueError(f"unknown mu_scale {fed.mu_scale!r}; choose none or rms")
        self.task, self.seed = task, int(seed)
        self.M, self.m, self.tau, self.P = fed.num_clients, fed.clients_per_round, fed.local_steps, fed.perturbations
        self.mu, self.lr, self.difference, self.batch_size = fed.mu, fed.lr, fed.difference, fed.batch_size
        self.weight_decay, self.mu_scale = fed.weight_decay, fed.mu_scale
        self.verify, self.cache = fed.verify_replay, fed.cache_directions
        params = task.params()
        self.device = params[0].device
        self.layout = resolve(getattr(perturb, "layout", "auto"), self.device)
        self.chunk = chunk_of(self.layout, getattr(perturb, "chunk", None))
        self.work = trainable(params, self.layout, getattr(curvature_factory, "elementwise", True))
        # flat layout, forward differences: each restore folds into the next write (P + 1 passes per step)
        self.fused = self.layout == "flat" and self.difference == "forward"
        self.generator = getattr(perturb, "generator", "native")
        self.scratch = Scratch(self.work, self.chunk, self.generator)
        server_params = [p.detach().clone() for p in self.work]
        self.server = Server(server_params, curvature_factory(server_params), fed.lr, fed.local_steps,
                             fed.perturbations, fed.aggregator, fed.trim_fraction, fed.max_abs_scalar,
                             fed.weight_decay, fed.clip_factor, chunk=self.chunk,
                             generator=self.generator)
        self.faulty = faulty_set(seed, fed.num_clients, fed.faulty_clients)  # hiso/faults.py
        self.fault, self.fault_scale = fed.fault, fed.fault_scale
        self.clients = [ClientState(i) for i in range(fed.num_clients)]
        self.dropped = dropped_clients(fed.dropped_from) if fed.dropped_from else {}
        if fed.verify_replay:
            for c in self.clients:
                c.params = [p.clone() for p in server_params]
                c.curvature = curvature_factory(c.params)

    @property
    def stream(self) -> dict:
        """The fingerprint of this run's directions (hiso/layout.py): run.json and checkpoints carry it."""
        return fingerprint(self.layout, self.chunk, self.generator, self.device)

    def new_scratch(self, params: list[torch.Tensor]) -> Scratch:
        """Scratch space for a replica (replay draws the same pieces as the server)."""
        return Scratch(params, self.chunk, self.generator)

    @property
    def rounds_done(self) -> int:
        return len(self.server.log)

    def global_params(self) -> list[torch.Tensor]:
        return self.server.params

    def last_rejection(self) -> str:
        return self.server.rejected[-1][1] if self.server.rejected else "none"

    @torch.no_grad()
    def load_server_model(self) -> None:
        """Copy the global model into the working model (for evaluation)."""
        for w, s in zip(self.work, self.server.params):
            w.copy_(s)

    @torch.no_grad()
    def _catch_up(self, c: ClientState, msg: RoundStart, check: bool = True) -> tuple[Curvature, float]:
        """Bring client c to the server's state; returns the curvature to compute with and the replay error.
        A client with a replica (verify mode, or a deployed client: `check=False`, no server model at hand)
        really replays what it downloaded; otherwise the simulator copies the server model, which replay is
        proven to equal."""
        if c.params is None:
            self.load_server_model()
            c.synced = len(self.server.log)
            return self.server.curvature, 0.0
        self.replay(c, msg, self.new_scratch(c.params))
        diff = 0.0
        if check:
            diff = max(float((a - b).abs().max()) for a, b in zip(c.params, self.server.params))
            if diff > self.replay_tolerance or not c.curvature.equals(self.server.curvature):
                raise ReplayMismatch(f"client {c.id} after catch-up: max |x - x_server| = {diff:.3g}, "
                                     f"curvature equal: {c.curvature.equals(self.server.curvature)}")
        for w, p in zip(self.work, c.params):
            w.copy_(p)
        return c.curvature, diff

    @torch.no_grad()
    def _local_steps(self, client: int, r: int, seeds: np.ndarray, curvature: Curvature, mu: float
                     ) -> tuple[np.ndarray, np.ndarray, float, int]:
        rng = batch_rng(self.seed, r, client)
        scalars = np.empty((self.tau, self.P), np.float32)
        second = np.empty((self.tau, self.P), np.float32) if curvature.second_differences else None
        loss0, passes = float("nan"), 0
        loss = getattr(self.task, "device_loss", None) or self.task.loss  # a tensor: no host sync per forward pass
        for k in range(self.tau):
            batch = self.task.batch(client, rng, self.batch_size)
            dirs = StepDirections(int(seeds[k]), self.P, self.work, curvature, self.scratch, self.cache)
            update = k < self.tau - 1  # the last local update is discarded with the round: skip it (exact)
            est = estimate(self.work, lambda: loss(batch), dirs, mu, self.difference, second=second is not None,
                           fused=self.fused, leave=self.fused and update)
            scalars[k] = est.scalars
            if second is not None:
                second[k] = est.second
            passes += est.forward_passes
            if k == 0:
                loss0 = est.loss
            if update:
                step_(self.work, dirs, est.scalars / np.float32(self.P), self.lr, weight_decay=self.weight_decay,
                      restore=mu if self.fused else 0.0)
        extra = np.zeros(0, np.float32) if second is None else second.reshape(-1)
        return scalars, extra, loss0, passes

    def step_mu(self, curvature: Curvature | None = None) -> float:
        """This round's perturbation radius: mu, or (mu_scale="rms") mu / RMS(H^{-1/2}) so that |mu z| stays
        ~ mu |u| however H rescales the directions.  A function of H, hence of the log: every party agrees
        (a client computes it from its caught-up curvature, the server from its own)."""
        if self.mu_scale == "rms":
            return self.mu / (curvature or self.server.curvature).rms_inv_sqrt()
        return self.mu

    def run_round(self) -> dict:
        """One federated round; returns its measured row (losses, bytes, forward passes, rejections)."""
        r = self.rounds_done
        rng = round_rng(self.seed, r)
        sampled = sorted(int(c) for c in rng.choice(self.M, self.m, replace=False))
        seeds = self.draw_seeds(rng)
        self.server.open_round(r, seeds, sampled)
        mu = self.step_mu()  # what each client computes from its caught-up H (the row records it)
        wire = Wire()
        downs = {}
        for cid in sampled:
            msg = self.downlink(self.clients[cid])
            data = msg.encode()
            wire.add_down(msg, data)
            downs[cid] = (type(msg), data)
        replies = self.exchange(r, downs)
        losses, passes, replay_diff = [], 0, 0.0
        for cid in sampled:
            reply = replies[cid]
            wire.add_up(reply.payload)
            if reply.payload:  # a dropped client (deployment engine) measured nothing
                losses.append(reply.loss)
            passes += reply.forward_passes
            replay_diff = max(replay_diff, reply.replay_diff)
            self.server.receive(reply.payload, cid)
        rec = self.server.close_round()
        extra = {}
        if self.verify:
            extra["replay_max_abs_diff"] = replay_diff
        if self.mu_scale != "none":
            extra["mu"] = mu
        extra.update(self.transport_extra())
        return RoundRow(r + 1, float(np.mean(losses)) if losses else float("nan"), wire.up, wire.up_scalars, wire.down, wire.down_seeds,
                        wire.down_catchup, passes, len(self.server.rejected), rec.n_accepted, extra).as_dict()

    def exchange(self, r: int, downs: dict[int, tuple[type, bytes]]) -> dict[int, Reply]:
        """Deliver each sampled client's downlink bytes and collect its reply.  The simulator computes every
        client in this process; a deployment engine (hiso/flower) sends the same bytes over the network."""
        dropped = self.dropped.get(r + 1, ())  # a deployed run's participation, replayed (federation.dropped_from)
        return {cid: Reply(b"", float("nan"), 0) if cid in dropped
                else self.client_round(self.clients[cid], r, msg_type.decode(data))
                for cid, (msg_type, data) in downs.items()}

    def transport_extra(self) -> dict:
        """Columns an engine adds to the round's row (the Flower engine: its serialized and TCP bytes)."""
        return {}

    def client_round(self, c: ClientState, r: int, received: RoundStart, check: bool = True) -> Reply:
        """Everything one client does in round r with the message it received: catch up, compute tau x P
        scalars, encode the upload."""
        curvature, diff = self._catch_up(c, received, check)
        mu = self.step_mu(curvature)
        scalars, extra, loss0, n = self._local_steps(c.id, r, received.seeds, curvature, mu)
        if c.id in self.faulty:
            last = self.server.log[-1].scalars if self.server.log else None
            scalars = corrupt(self.fault, scalars, self.fault_scale, self.seed, r, c.id, last)
        up = Upload(r, c.id, scalars, extra)
        return Reply(self.upload_hook(up), loss0, n, diff, mu)

    def draw_seeds(self, rng: np.random.Generator) -> np.ndarray:
        """This round's tau shared seeds (uint32)."""
        return rng.integers(0, 2**32, self.tau, dtype=np.uint32)

    def downlink(self, c: ClientState):
        """The message a sampled client receives at the start of the round."""
        return self.server.round_start(c.synced)

    def replay(self, c: ClientState, msg, scratch: Scratch) -> None:
        """Apply what the client missed (from the decoded downlink) to its replica."""
        for rec in msg.catch_up:
            if rec.round != c.synced:
                raise ReplayMismatch(f"client {c.id} expected record {c.synced}, got {rec.round}")
            apply_record(c.params, c.curvature, rec, self.lr, scratch, self.weight_decay)
            c.synced += 1

    def upload_hook(self, up: Upload) -> bytes:
        """Serialise an upload (tests override this to inject faulty clients)."""
        return up.encode()

    # --- persistence: the log is the training state --------------------------------------------------
    def state_dict(self) -> dict:
        """References, not clones (a clone of OPT-2.7B's model and H on the GPU would need about 20 GB): the runner
        saves the dict at once, and torch.save copies each storage to the host as it writes it."""
        sd = {"server_params": [p.detach() for p in self.server.params], "curvature": self.server.curvature.state_dict(),
              "log": b"".join(r.encode() for r in self.server.log), "synced": [c.synced for c in self.clients]}
        if self.verify:
            sd["replicas"] = [([p.detach() for p in c.params], c.curvature.state_dict()) for c in self.clients]
        return sd

    @torch.no_grad()
    def load_state_dict(self, sd: dict) -> None:
        for p, q in zip(self.server.params, sd["server_params"], strict=True):
            p.copy_(q)
        self.server.curvature.load_state_dict(sd["curvature"])
        data, off, recs = sd["log"], 0, []
        while off < len(data):
            rec, off = RoundRecord.decode_from(data, off)
            recs.append(rec)
        self.server.log = recs
        for c, s in zip(self.clients, sd["synced"], strict=True):
            c.synced = s
        if self.verify:
            for c, (ps, cs) in zip(self.clients, sd["replicas"], strict=True):
                for p, q in zip(c.params, ps):
                    p.copy_(q)
                c.curvature.load_state_dict(cs)
