"""The transport of a d-sized exchange (FedAvg, FedZO) over the same Flower deployment, for the bytes table.

FedAvg and FedZO send each sampled client the model (d floats) and receive d floats back every round; the
suite runs them in the simulator only, so this ServerApp measures what carrying their messages costs on the
same transport: per round, every sampled client gets an `ArrayRecord` of the run's trainable parameters (the
same global model for all, as FedAvg sends it) and returns an `ArrayRecord` of the same shapes whose content
differs per client and round.  No training happens: the rows hold bytes and seconds only, and
the bytes table labels them so.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from .app import wire_size

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    from ..config import load_config
    from ..federation import round_rng
    from ..io import atomic_write
    from ..runner import build_federation
    out = Path(str(context.run_config["out"]))
    outcome = {"status": "failed", "message": "the probe stopped early"}
    try:
        cfg = load_config(data=json.loads((out / "flower" / "config.json").read_text()))
        fed, _ = build_federation(cfg)
        base = [p.detach().cpu().numpy() for p in fed.global_params()]
        nodes: list[int] = []
        deadline = time.time() + cfg.federation.round_timeout
        want = len(json.loads((out / "flower" / "partitions.json").read_text()))
        while len(nodes) < want and time.time() < deadline:
            nodes = sorted(int(n) for n in grid.get_node_ids())
            time.sleep(0.5)
        f = cfg.federation
        rows = []
        for r in range(f.rounds):
            sampled = sorted(int(c) for c in round_rng(cfg.seed, r).choice(f.num_clients, f.clients_per_round,
                                                                              replace=False))
            started, t0 = time.time(), time.perf_counter()
            arrays = ArrayRecord([a + np.float32(r + 1) for a in base])  # a new global model every round
            msgs = [Message(RecordDict({"model": arrays, "down": ConfigRecord({"client": c, "round": r})}),
                            dst_node_id=nodes[c % len(nodes)], message_type=MessageType.TRAIN) for c in sampled]
            replies = list(grid.send_and_receive(msgs, timeout=f.round_timeout))
            rows.append({"round": r + 1, "flower_bytes_down": sum(wire_size(m) for m in msgs),
                         "flower_bytes_up": sum(wire_size(m) for m in replies),
                         "answered": sum(m.has_content() for m in replies), "exchange_started_at": started,
                         "exchange_seconds": time.perf_counter() - t0,
                         "array_bytes": sum(p.numel() * p.element_size() for p in fed.global_params())})
        import pandas as pd
        atomic_write(out / "metrics.csv", pd.DataFrame(rows).to_csv(index=False))
        outcome = {"status": "complete", "message": "", "rounds": f.rounds}
    except Exception as e:  # noqa: BLE001 - recorded for the runner
        import traceback
        traceback.print_exc()
        outcome = {"status": "failed", "message": f"{type(e).__name__}: {e}"}
    finally:
        atomic_write(out / "flower" / "outcome.json", json.dumps(outcome, indent=1))


@client.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with an update of the model's shapes whose content differs per client and round, as real updates
    do: Flower stores objects by content, so an echo of the download would not travel again."""
    cid = int(msg.content["down"]["client"])
    rng = np.random.default_rng([cid, int(msg.content["down"]["round"])])
    update = [rng.standard_normal(a.shape).astype(a.dtype) for a in msg.content["model"].to_numpy_ndarrays()]
    return Message(RecordDict({"update": ArrayRecord(update), "up": ConfigRecord({"client": cid})}), reply_to=msg)
