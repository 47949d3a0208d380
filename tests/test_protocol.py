"""Wire format and measured byte accounting."""
import numpy as np
import pytest

from hiso.federation import round_rng
from hiso.protocol import DOWN_HEAD, REC_HEAD, UP_HEAD, ProtocolError, RoundRecord, RoundStart, Upload
from hiso.run import build_federation


def test_upload_roundtrip_and_size():
    up = Upload(7, 3, np.arange(15, dtype=np.float32).reshape(3, 5))
    data = up.encode()
    assert len(data) == UP_HEAD.size + 4 * 15
    back = Upload.decode(data)
    assert (back.round, back.client) == (7, 3) and np.array_equal(back.scalars, up.scalars)


def test_round_start_roundtrip():
    recs = [RoundRecord(r, np.array([r, r + 1], np.uint32), np.full((2, 3), r, np.float32),
                        np.arange(r, dtype=np.float32), 2) for r in range(4)]
    msg = RoundStart(4, np.array([11, 12], np.uint32), recs)
    back = RoundStart.decode(msg.encode())
    assert back.round == 4 and list(back.seeds) == [11, 12] and len(back.catch_up) == 4
    for a, b in zip(recs, back.catch_up):
        assert a.round == b.round and np.array_equal(a.scalars, b.scalars) and np.array_equal(a.extra, b.extra)
    assert msg.sizes()["catch_up"] == sum(len(r.encode()) for r in recs)


@pytest.mark.parametrize("bad", [b"", b"HSUP", b"XXXX" + bytes(14), None])
def test_malformed_upload_is_a_protocol_error(bad):
    if bad is None:  # declared length disagrees with the payload
        bad = Upload(0, 0, np.zeros((1, 5), np.float32)).encode()[:-4]
    with pytest.raises(ProtocolError):
        Upload.decode(bad)


def test_truncated_round_start_is_a_protocol_error():
    data = RoundStart(2, np.array([1], np.uint32), [RoundRecord(0, np.array([1], np.uint32),
                                                                np.ones((1, 5), np.float32), np.zeros(0, np.float32), 2)]).encode()
    for cut in (3, len(data) - 1):
        with pytest.raises(ProtocolError):
            RoundStart.decode(data[:cut])
    with pytest.raises(ProtocolError):
        RoundStart.decode(data + b"\0")


@pytest.mark.parametrize("tau,P", [(1, 5), (3, 2)])
def test_measured_bytes_match_protocol(cfg_factory, tau, P):
    """Uplink tau*P fp32 scalars per sampled client; downlink this round's seeds plus one record per round
    the client missed.  Expected values are derived from the sampling, independently of the simulator."""
    M, m, R, seed = 6, 2, 40, 3
    cfg = cfg_factory(seed=seed, task={"name": "quadratic", "dim": 20},
                      federation={"num_clients": M, "clients_per_round": m, "rounds": R, "local_steps": tau,
                                  "perturbations": P})
    fedn, _ = build_federation(cfg)
    last_seen = [0] * M  # log position each client has replayed
    rec_bytes = REC_HEAD.size + 4 * tau + 4 * tau * P
    for r in range(R):
        row = fedn.run_round()
        sampled = sorted(round_rng(seed, r).choice(M, m, replace=False))
        missed = sum(r - last_seen[c] for c in sampled)
        assert row["bytes_up"] == m * (UP_HEAD.size + 4 * tau * P)
        assert row["bytes_up_scalars"] == m * 4 * tau * P
        assert row["bytes_down_seeds"] == m * 4 * tau
        assert row["bytes_down_catchup"] == missed * rec_bytes
        assert row["bytes_down"] == m * (DOWN_HEAD.size + 4 * tau) + missed * rec_bytes
        for c in sampled:
            last_seen[c] = r
