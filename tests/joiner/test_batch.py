"""``JoinEngine.process_batch`` (compiled impression parse + inline no-op path) == ``process`` one by one."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from joiner.batchparse import parse_ignored
from joiner.config import JoinerConfig
from joiner.engine import JoinEngine
from joiner.fastcodec import FastCodec
from joiner.store import StateStore
from schemas.codec import DecodeError, default_codec
from tests.joiner.conftest import SPEC, Msg, action, feature_log

codec = default_codec()
F, A = "f", "a"


def stream(seed: int) -> list[Msg]:
    """Feature logs, impressions, clicks, and every kind of bad or unusual impression, on 2 partitions."""
    rng = random.Random(seed)
    msgs: list[Msg] = []
    off: Counter = Counter()

    def add(topic: str, p: int, key: bytes | None, value: bytes | None) -> None:
        msgs.append(Msg(topic, p, off[(topic, p)], key, value))
        off[(topic, p)] += 1

    for r in range(60):
        rid, p, t = f"req-{r}", r % 2, 1_000_000 + r * 50
        if r % 7 != 3:  # some requests never get features: their impressions wait, then dead-letter
            add(F, p, rid.encode(), codec.encode("FeatureLog", feature_log(rid, t, [1, 2, 3])))
        for item in (1, 2, 3, 9):  # 9 was not shown: unknown_item
            imp = codec.encode("ActionLog", action(rid, item, "impression", t + rng.randint(0, 400)))
            kind = rng.randrange(12)
            if kind == 0:
                imp = imp[:-1]  # cut
            elif kind == 1:
                imp = imp[:12] + b"\xff" + imp[13:]  # corrupt byte
            elif kind == 2:
                add(F, p, rid.encode(), imp)  # an ActionLog on the features topic
                continue
            elif kind == 3:
                imp = codec.encode("ActionLog", {**action(rid, item, "impression", t + 5), "value": 0.5})
            add(A, p, rid.encode(), imp)
        add(A, p, rid.encode(), codec.encode("ActionLog", action(rid, 2, "click", t + 30)))
    add(A, 0, b"x", codec.encode("ActionLog", action("\u00e9t\u00e9", 1, "impression", 5)))  # non-ASCII id
    add(A, 0, b"x", b"\xc3\x01" + codec.current["ActionLog"].fingerprint + b"\x07\xff\xfe")  # bad UTF-8
    add(A, 1, None, None)
    add(A, 1, b"big", b"\x00" * 5000)
    add(A, 0, b"z", codec.encode("ActionLog", action("r" * 200, 1, "impression", 5)))  # long request id
    return msgs


def run(tmp: Path, msgs: list[Msg], batched: bool, seed: int) -> tuple[Any, ...]:
    cfg = JoinerConfig(window_ms=1000, allowed_lateness_ms=200, negative_keep_rate=0.5, max_message_bytes=4096)
    eng = JoinEngine(cfg, SPEC, StateStore.open(cfg, tmp), F, A)
    eng.restore([(F, 0), (F, 1), (A, 0), (A, 1)])
    rng = random.Random(seed)
    eofs = []
    slow = Counter()
    process = eng.process

    def counted(*a: Any) -> None:
        slow["calls"] += 1
        process(*a)

    eng.process = counted  # type: ignore[method-assign]
    i = 0
    while i < len(msgs):
        n = rng.randint(1, 40)
        chunk = msgs[i:i + n]
        i += n
        if batched:
            eof = Msg(A, 1, 0, None, None, error="eof")  # an error event in the batch: handed to on_error
            got = eng.process_batch([*chunk[:2], eof, *chunk[2:]], eofs.append)
            assert got == len(chunk)
        else:
            for m in chunk:
                process(m.topic(), m.partition(), m.offset(), m.key(), m.value())
        eng.advance()
    while eng.drain():
        pass
    ex, dead = eng.take_output()
    dead_reasons = Counter(codec.decode(v)[1]["reason"] for _, v in dead)
    out = (sorted(v for _, v in ex), dead_reasons, dict(eng.counts), dict(eng.offsets), dict(eng.part_max))
    eng.store.close()
    return out + ((len(eofs), slow["calls"]),)


def test_process_batch_equals_process_one_by_one(tmp_path: Path) -> None:
    for seed in range(4):
        msgs = stream(seed)
        *one, _ = run(tmp_path / f"one-{seed}", msgs, batched=False, seed=seed)
        *batched, (eofs, slow_calls) = run(tmp_path / f"batch-{seed}", msgs, batched=True, seed=seed)
        assert batched == one
        assert eofs > 0 and len(msgs) - slow_calls >= 60  # the valid impressions took the inline path
        ex, dead = one[0], one[1]
        assert len(ex) > 100 and {"unknown_item", "malformed", "oversize", "no_features"} <= set(dead)


def test_parse_ignored_accepts_exactly_the_valid_ignored_actions() -> None:
    """Fuzzed ActionLogs: a candidate decodes (by the codec) to the same fields with an ignored action."""
    fast = FastCodec()
    rng = random.Random(3)
    ign = b"\x14impression"
    goods = [codec.encode("ActionLog", action(f"req-{i}", i * 977, a, 10**12 + i))
             for i in range(6) for a in ("impression", "click")]
    goods.append(codec.encode("ActionLog", {**action("\u00e9", 3, "impression", 5), "value": 2.5}))
    vals = []
    for n in range(4000):
        b = bytearray(goods[n % len(goods)])
        if n % 3:
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(10, len(b))] = rng.randrange(256)
        if n % 5 == 0:
            b = b[:rng.randrange(8, len(b) + 1)]
        vals.append(bytes(b))
    lens = np.array([len(v) for v in vals], np.int64)
    out = np.empty((len(vals), 5), np.int64)
    parse_ignored(b"".join(vals), lens, 1 << 20, fast.header("ActionLog"), ign, np.array([0, len(ign)]), out)
    blob, pos, candidates = b"".join(vals), np.concatenate([[0], np.cumsum(lens)]), 0
    for j, v in enumerate(vals):
        try:
            rec = codec.decode(v, expect="ActionLog")[1]
        except DecodeError:
            rec = None
        ok, r0, r1, item, ts = out[j].tolist()
        if ok:
            candidates += 1
            if rec is None:  # only the request id's UTF-8 is left to the caller to check
                assert "UnicodeDecodeError" in codec_reason(v)
                with pytest.raises(UnicodeDecodeError):
                    blob[r0:r1].decode()
                continue
            assert rec["action"] == "impression" and rec["request_id"]
            assert blob[r0:r1].decode() == rec["request_id"] and pos[j] <= r0 < r1 <= pos[j + 1]
            assert (item, ts) == (rec["item_id"], rec["ts_ms"])
        elif rec is not None and v[:10] == fast.header("ActionLog"):
            assert rec["action"] != "impression" or not rec["request_id"]
    assert candidates > 200


def codec_reason(v: bytes) -> str:
    try:
        codec.decode(v, expect="ActionLog")
    except DecodeError as e:
        return f"{e.reason}: {e.detail}"
    return "ok"
