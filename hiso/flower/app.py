"""The Flower components of `federation.engine: flower`: a ServerApp that runs the suite's own runner with the
rounds' client work sent over Flower, and a ClientApp that is `Federation.client_round` on a SuperNode.

What travels: the bytes of hiso/protocol.py, unchanged, inside Flower `ConfigRecord`s.  Down: the RoundStart
(the round's seeds and every log record the client missed).  Up: the Upload (tau x P scalars), plus the client's
measured training loss and forward passes (monitoring, counted in Flower's bytes, never used by the update).

A SuperNode starts a new ClientApp process for every message, so a client's state (its replica of the model and
curvature, and its log position) lives in a file under the SuperNode's `state-dir` (node config), written
atomically after each round; the data partition is rebuilt from the config and seed.  A SuperNode hosts the
clients `partition-ids` (node config, e.g. "0,3").

The first message to every SuperNode (QUERY "hello") carries the run's config and the server's stream fingerprint
(hiso/layout.py); a SuperNode whose own fingerprint differs refuses to join, and the run stops.  The last (QUERY "sync") carries
the rest of the log, after which every client reports a digest of its replayed model and curvature: the run
fails unless each equals the server's.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import serde
from flwr.serverapp import Grid, ServerApp

from ..federation import ClientState, Federation, ReplayMismatch, Reply
from ..protocol import RoundStart

server = ServerApp()
client = ClientApp()


def digest(params: list[torch.Tensor], curvature) -> str:
    """sha256 over the model's and the curvature's bytes: equal digests are bitwise-equal states."""
    h = hashlib.sha256()

    def add(v) -> None:
        if torch.is_tensor(v):
            h.update(str((v.dtype, tuple(v.shape))).encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, dict):
            for k in sorted(v):
                h.update(str(k).encode())
                add(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                add(x)
        else:
            h.update(repr(v).encode())
    add(list(params))
    add(curvature.state_dict())
    return h.hexdigest()


def wire_size(msg: Message) -> int:
    """Bytes of a Flower message as Flower serialises it (Message + RecordDict protobuf)."""
    return serde.message_to_proto(msg).ByteSize()


# ------------------------------------------------------------------------------------------------- server
class FlowerClients:
    """Replaces `Federation.exchange`: the sampled clients' downlinks go to their SuperNodes in one
    send_and_receive, and their uploads come back; a client that does not answer within the round timeout is
    dropped from the round (an empty upload, rejected and logged by the server like any malformed one)."""

    def __init__(self, fed: Federation, grid: Grid, node_of: dict[int, int], greeted: set[int], config: dict,
                 timeout: float, numerics: dict[str, dict] | None = None):
        self.fed, self.grid, self.node_of, self.timeout = fed, grid, node_of, timeout
        self.greeted, self.config = greeted, config
        # node id -> the kernels its ClientApp computes with (answer_hello); a rejoining node adds its own
        self.numerics: dict[str, dict] = {} if numerics is None else numerics
        self.bytes_down = self.bytes_up = 0
        self.seconds, self.started_at = 0.0, 0.0
        self.dropped: list[int] = []
        self.timing: dict[str, float] = {}
        fed.exchange = self.exchange
        fed.transport_extra = self.transport_extra

    def rejoin(self) -> None:
        """A restarted SuperNode registers under a new node id: greet it, and route its clients there."""
        new = [int(n) for n in self.grid.get_node_ids() if int(n) not in self.greeted]
        if new:
            self.node_of.update(_hello(self.grid, new, self.config, self.timeout, self.numerics))
            self.greeted.update(new)

    def exchange(self, r: int, downs: dict[int, tuple[type, bytes]]) -> dict[int, Reply]:
        self.rejoin()
        t0 = time.perf_counter()
        self.started_at = time.time()
        msgs = {cid: Message(RecordDict({"down": ConfigRecord({"round_start": data, "round": r, "client": cid})}),
                             dst_node_id=self.node_of[cid], message_type=MessageType.TRAIN)
                for cid, (_, data) in downs.items()}
        self.bytes_down = sum(wire_size(m) for m in msgs.values())
        replies = list(self.grid.send_and_receive(list(msgs.values()), timeout=self.timeout))
        self.bytes_up = sum(wire_size(m) for m in replies)
        out, timings = {}, []
        for m in replies:
            if not m.has_content():
                continue
            up = m.content["up"]
            timings.append(json.loads(str(up["timing"])))
            cid = int(up["client"])
            out[cid] = Reply(bytes(up["upload"]), float(up["loss"]), int(up["forward_passes"]), 0.0,
                             float(up["mu"]))
            self.fed.clients[cid].synced = r  # it replayed every record before this round
        self.dropped = sorted(cid for cid in downs if cid not in out)
        for cid in self.dropped:  # no upload this round; its log position is unknown to the server, so its next
            out[cid] = Reply(b"", math.nan, 0)  # downlink starts at its last answer (the client skips repeats)
        self.seconds = time.perf_counter() - t0
        # the slowest client's stages (the round waits for it): process start-up (imports), state load and
        # federation build, compute, state save; the rest of exchange_seconds is transport and polling
        slowest = max(timings, key=lambda t: sum(v for v in t.values() if math.isfinite(v)), default={})
        self.timing = {f"client_{k}_seconds": float(v) for k, v in slowest.items()}
        return out

    def transport_extra(self) -> dict:
        return {"flower_bytes_down": self.bytes_down, "flower_bytes_up": self.bytes_up,
                "exchange_seconds": self.seconds, "exchange_started_at": self.started_at, **self.timing,
                "dropped_clients": json.dumps(self.dropped)}


class StreamMismatch(RuntimeError):
    """A SuperNode would draw other directions than the server (another GPU model, torch or layout)."""


def _hello(grid: Grid, nodes: list[int], config: dict, timeout: float,
           numerics: dict[str, dict] | None = None) -> dict[int, int]:
    """client id -> node id for the given SuperNodes, from their answers to a hello that hands them the config and
    the server's stream fingerprint; StreamMismatch when a SuperNode refuses to join under that fingerprint.
    Each node's numerics (its kernels, and whether its bits hold on any CPU) go into `numerics` by node id."""
    from ..config import load_config
    from ..layout import config_stream
    stream = json.dumps(config_stream(load_config(data=config)))
    msgs = [Message(RecordDict({"hello": ConfigRecord({"config": json.dumps(config), "stream": stream})}),
                    dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    found = {}
    for m in grid.send_and_receive(msgs, timeout=timeout):
        if m.has_content():
            hello = m.content["hello"]
            if "refused" in hello:
                raise StreamMismatch(f"SuperNode {m.metadata.src_node_id}: {hello['refused']}")
            for cid in json.loads(hello["clients"]):
                found[int(cid)] = int(m.metadata.src_node_id)
            if numerics is not None and "numerics" in hello:
                numerics[str(m.metadata.src_node_id)] = json.loads(str(hello["numerics"]))
    return found


def _discover(grid: Grid, config: dict, clients: int, timeout: float,
              numerics: dict[str, dict]) -> tuple[dict[int, int], set[int]]:
    """Wait until every client has a SuperNode; returns client id -> node id and the nodes greeted."""
    deadline = time.time() + timeout
    node_of: dict[int, int] = {}
    greeted: set[int] = set()
    while len(node_of) < clients:
        if time.time() > deadline:
            raise RuntimeError(f"only clients {sorted(node_of)} of {clients} answered within {timeout:g} s")
        nodes = [int(n) for n in grid.get_node_ids() if int(n) not in greeted]
        if not nodes:
            time.sleep(0.5)
            continue
        node_of.update(_hello(grid, nodes, config, max(1.0, deadline - time.time()), numerics))
        greeted.update(nodes)
    return node_of, greeted


def _sync_all(grid: Grid, fed: Federation, node_of: dict[int, int], timeout: float) -> dict[str, bool]:
    """Send every client the rest of the log; each replays it and returns its digest, compared to the server's."""
    want = digest(fed.server.params, fed.server.curvature)
    msgs = {cid: Message(RecordDict({"sync": ConfigRecord({
        "round_start": RoundStart(fed.rounds_done, np.zeros(0, np.uint32), fed.server.log[c.synced:]).encode(),
        "client": cid})}), dst_node_id=node_of[cid], message_type=MessageType.QUERY)
        for cid, c in enumerate(fed.clients)}
    got = {}
    for m in grid.send_and_receive(list(msgs.values()), timeout=timeout):
        if m.has_content():
            got[int(m.content["sync"]["client"])] = str(m.content["sync"]["digest"])
    equal = {str(cid): got.get(cid) == want for cid in msgs}
    if not all(equal.values()):
        raise ReplayMismatch(f"client replicas differ from the server after the final sync: {equal} "
                             f"(server digest {want[:16]}, clients {({k: v[:16] for k, v in got.items()})})")
    return equal


@server.main()
def main(grid: Grid, context: Context) -> None:
    from ..config import load_config
    from ..io import atomic_write
    from ..runner import run
    out = Path(str(context.run_config["out"]))
    outcome = {"status": "failed", "message": "the ServerApp stopped before the run ended"}
    try:
        data = json.loads((out / "flower" / "config.json").read_text())
        cfg = load_config(data=data)
        f = cfg.federation
        nodes_numerics: dict[str, dict] = {}
        node_of, greeted = _discover(grid, data, f.num_clients, f.round_timeout, nodes_numerics)
        holder = {}

        def attach(fed):
            holder["clients"] = FlowerClients(fed, grid, node_of, greeted, data, f.round_timeout, nodes_numerics)
        res = run(cfg, out, deployed=True, federation_hook=attach)
        replicas = None
        if "clients" in holder:  # a run that was already final built no federation: nothing to sync
            clients = holder["clients"]
            clients.rejoin()
            replicas = _sync_all(grid, clients.fed, node_of, max(120.0, 4 * f.round_timeout))
        outcome = {"status": res.status, "message": "", "rounds": int(res.metrics["round"].iloc[-1]),
                   "clients": {str(k): v for k, v in node_of.items()}, "replicas_equal_server": replicas,
                   "nodes_numerics": nodes_numerics}
    except Exception as e:  # noqa: BLE001 - recorded for the runner, which does not trust Flower's exit code
        import traceback
        traceback.print_exc()
        outcome = {"status": getattr(e, "status", "failed"), "message": f"{type(e).__name__}: {e}"}
    finally:
        atomic_write(out / "flower" / "outcome.json", json.dumps(outcome, indent=1))


# ------------------------------------------------------------------------------------------------- client
class NodeClients:
    """The clients a SuperNode hosts: the run's config (from the hello) and each client's replica on disk."""

    def __init__(self, context: Context):
        nc = context.node_config
        self.dir = Path(str(nc["state-dir"]))
        self.ids = [int(x) for x in str(nc["partition-ids"]).split(",") if x.strip()]
        # fault injection for the tests: a replica nudged after replay (the final sync must catch it), and
        # uploads cut short (the server must reject them as in the simulator)
        self.corrupt = float(nc.get("corrupt-replay", 0.0))
        self.truncate = int(nc.get("truncate-upload", 0))
        self.fed = None

    def federation(self) -> Federation:
        if self.fed is None:
            from ..config import load_config
            from ..runner import build_federation
            self.cfg = load_config(data=json.loads((self.dir / "config.json").read_text()))
            from .. import numerics
            numerics.apply_torch(max(1, self.cfg.run.threads))  # the server's kernels: oneDNN off when portable
            self.fed, _ = build_federation(self.cfg)
        return self.fed

    def load(self, cid: int) -> ClientState:
        """Client cid's replica: the initial model (from the seed) and H, advanced by every record it replayed."""
        if cid not in self.ids:
            raise ValueError(f"client {cid} is not hosted here (partition-ids {self.ids})")
        from ..curvature import make_factory
        fed = self.federation()
        c = ClientState(cid, 0, [p.detach().clone() for p in fed.server.params])
        c.curvature = make_factory(self.cfg.curvature, fed.task)(c.params)
        path = self.dir / f"client{cid}.pt"
        if path.exists():
            state = torch.load(path, weights_only=False)
            with torch.no_grad():
                for p, q in zip(c.params, state["params"], strict=True):
                    p.copy_(q)
            c.curvature.load_state_dict(state["curvature"])
            c.synced = int(state["synced"])
        return c

    def save(self, c: ClientState) -> None:
        from ..io import atomic_torch_save
        atomic_torch_save({"params": c.params, "curvature": c.curvature.state_dict(), "synced": c.synced},
                          self.dir / f"client{c.id}.pt")

    def catch_up_only(self, c: ClientState, msg: RoundStart) -> RoundStart:
        """The downlink without the records this client already replayed (a reply the server never saw)."""
        return RoundStart(msg.round, msg.seeds, [r for r in msg.catch_up if r.round >= c.synced])


def answer_hello(node: NodeClients, hello) -> dict:
    """A SuperNode's answer to the hello: the clients it hosts, or a refusal (nothing written) when its directions
    would differ from the server's (the fingerprint of the config's stream on this node's device, hiso/layout.py)."""
    from ..config import load_config
    from ..layout import config_stream, mismatch
    config = str(hello["config"])
    if "stream" in hello:
        why = mismatch(json.loads(str(hello["stream"])), config_stream(load_config(data=json.loads(config))))
        if why:
            return {"refused": f"its directions would differ from the server's ({why}); join from a node with the "
                               "server's device model, torch and perturb settings"}
    node.dir.mkdir(parents=True, exist_ok=True)
    path = node.dir / "config.json"
    if path.exists() and path.read_text() != config:  # another run's state: start this one afresh
        for f in node.dir.glob("client*.pt"):
            f.unlink()
    from ..io import atomic_write
    atomic_write(path, config)
    threads = max(1, load_config(data=json.loads(config)).run.threads)
    return {"clients": json.dumps(node.ids), "numerics": json.dumps(node_numerics(threads))}


def node_numerics(threads: int) -> dict:
    """This ClientApp's kernels: whether its bits hold on any CPU and OpenBLAS's core type.  Flower loads NumPy
    before the suite, so a SuperNode started without the portable variables in its environment computes the LM's
    products on its own CPU's OpenBLAS kernel (docs/deployment.md); the server records that in run.json."""
    from .. import numerics
    numerics.apply_torch(threads)  # as NodeClients.federation does before it computes
    state = numerics.state()
    return {"bit_identical_across_cpus": state["bit_identical_across_cpus"],
            "blas_architecture": state["blas"]["architecture"], "cpu": state["cpu"]["model"]}


@client.query()
def query(msg: Message, context: Context) -> Message:
    node = NodeClients(context)
    if "hello" in msg.content:
        return Message(RecordDict({"hello": ConfigRecord(answer_hello(node, msg.content["hello"]))}), reply_to=msg)
    sync = msg.content["sync"]
    cid = int(sync["client"])
    c = node.load(cid)
    fed = node.federation()
    received = node.catch_up_only(c, RoundStart.decode(bytes(sync["round_start"])))
    fed.replay(c, received, fed.new_scratch(c.params))
    node.save(c)
    return Message(RecordDict({"sync": ConfigRecord({"client": cid, "digest": digest(c.params, c.curvature)})}),
                   reply_to=msg)


def _process_age() -> float:
    """Seconds since this process started (Linux /proc; NaN elsewhere): the ClientApp's start-up cost."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


@client.train()
def train(msg: Message, context: Context) -> Message:
    t = {"start": _process_age()}
    t0 = time.perf_counter()
    node = NodeClients(context)
    down = msg.content["down"]
    cid, r = int(down["client"]), int(down["round"])
    c = node.load(cid)
    fed = node.federation()
    t["load"] = time.perf_counter() - t0
    received = node.catch_up_only(c, RoundStart.decode(bytes(down["round_start"])))
    if node.corrupt:
        fed.replay(c, received, fed.new_scratch(c.params))
        with torch.no_grad():
            c.params[0].view(-1)[0] += node.corrupt
        received = RoundStart(received.round, received.seeds, [])
    t1 = time.perf_counter()
    reply = fed.client_round(c, r, received, check=False)
    t2 = time.perf_counter()
    node.save(c)
    t.update(compute=t2 - t1, save=time.perf_counter() - t2)
    payload = reply.payload[:-node.truncate] if node.truncate else reply.payload
    return Message(RecordDict({"up": ConfigRecord({
        "client": cid, "upload": payload, "loss": float(reply.loss), "forward_passes": int(reply.forward_passes),
        "mu": float(reply.mu), "timing": json.dumps(t)})}), reply_to=msg)


