"""The client's encoder: raw values -> FIDs as the spec says, errors that name the field, and never a
message the joiner would dead-letter for its shape (same bytes as the codec, passes the joiner's checks)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from joiner.config import JoinerConfig
from joiner.core import shown_ids
from joiner.engine import JoinEngine
from joiner.store import StateStore
from joiner.validate import Validator
from schemas.codec import default_codec
from schemas.spec import FeatureSpec, SpecError
from streamrec.applog import encoder as encoder_module
from streamrec.client import ActionLog, FeatureLog, LogEncoder

SPEC = FeatureSpec.model_validate({
    "slots": {
        "u_hash": {"number": 101, "side": "user", "type": "int"},
        "u_country": {"number": 102, "side": "user"},
        "u_tags": {"number": 103, "side": "user"},
        "u_old": {"number": 104, "side": "user", "retired": True},
        "i_hash": {"number": 201, "side": "item", "type": "int"},
        "i_category": {"number": 202, "side": "item"},
    },
    "crosses": {"country_x_category": {"number": 301, "of": ["u_country", "i_category"]},
                "hash_x_country": {"number": 302, "of": ["u_hash", "u_country"]}},
    "dense": {"u_score": {"side": "user"}, "i_price": {"side": "item", "default": 3.0}},
    "actions": {"labels": ["click", "like"], "ignored": ["view"]},
})
ENC = LogEncoder(SPEC, max_message_bytes=4096)
NATIVE = encoder_module._native  # the C module, if the install built it
codec = default_codec()


@pytest.fixture(autouse=True, scope="module", params=["C", "Python"])
def hot_paths(request: pytest.FixtureRequest) -> Any:
    """Every test here runs on both hot paths: the C module's (built by the install) and the pure
    Python one (what runs where no compiler was): each must give the codec's bytes and the same errors."""
    global ENC
    if request.param == "C":
        assert NATIVE is not None, "streamrec/applog/_native.c is not built: pip install -e ."
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "Python":
            mp.setattr(encoder_module, "_native", None)
        ENC = LogEncoder(SPEC, max_message_bytes=4096)
        assert (ENC.native is None) == (request.param == "Python")
        yield request.param


def good_log() -> FeatureLog:
    log = FeatureLog("req-1", user_id=42, ts_ms=1_700_000_000_000, user={"u_hash": 7, "u_country": "de",
                                                                        "u_tags": ["a", "b"]},
                     user_dense={"u_score": 0.5}, source="shop")
    log.add_item(11, {"i_hash": 11, "i_category": "shoes"}, {"i_price": 19.5})
    log.add_item(12, {"i_hash": np.int64(12), "i_category": ["bags", "shoes"]}, position=5)
    return log


def test_raw_values_become_the_spec_fids_with_crosses() -> None:
    rec = ENC.record(good_log())
    assert rec["request_id"] == "req-1" and rec["user_id"] == 42 and rec["source"] == "shop"
    us, h7, de = rec["user_sparse"], SPEC.fid("u_hash", 7), SPEC.fid("u_country", "de")
    assert us["u_hash"] == [h7] and us["u_tags"] == [SPEC.fid("u_tags", "a"), SPEC.fid("u_tags", "b")]
    assert us["hash_x_country"] == [SPEC.cross_fid("hash_x_country", h7, de)]  # a user-side cross
    i0, i1 = rec["items"]
    assert (i0["position"], i1["position"]) == (0, 5)  # default: the index; or as given
    assert i1["sparse"]["i_hash"] == [SPEC.fid("i_hash", 12)]  # a numpy int is an int
    assert i1["sparse"]["country_x_category"] == [SPEC.cross_fid("country_x_category", de, SPEC.fid("i_category", c))
                                                  for c in ("bags", "shoes")]
    assert i0["dense"] == {"i_price": 19.5} and i1["dense"] == {}
    a = ENC.record(ActionLog("req-1", 11, "click", 1_700_000_003_000, value=2.5))
    assert a == {"request_id": "req-1", "item_id": 11, "action": "click", "ts_ms": 1_700_000_003_000, "value": 2.5}


def test_bytes_are_exactly_the_codecs() -> None:
    for log in (good_log(), ActionLog("r", 1, "view", 5), ActionLog("r", -3, "like", 2**62, value=None)):
        data = ENC.encode(log)
        name, rec = codec.decode(data)
        assert codec.encode(name, rec) == data


def test_a_long_feed_is_encoded_as_the_codec_does() -> None:
    """100 shown items: past what the C path keeps on its stack; a miss, then a hit."""
    log = good_log()
    for i in range(100, 198):
        log.add_item(i, {"i_hash": i, "i_category": ["bags", "hats"][i % 2]}, {"i_price": i / 4}, position=i)
    enc = LogEncoder(SPEC, max_message_bytes=1 << 20)  # the C path or not, as the module's fixture says
    assert enc.encode(log) == reference(log) == enc.encode(log)


def bad(mutate) -> SpecError:
    log = good_log()
    mutate(log)
    with pytest.raises(SpecError) as e:
        ENC.encode(log)
    return e.value


@pytest.mark.parametrize("mutate,field,words", [
    (lambda g: setattr(g, "request_id", ""), "request_id", "missing"),
    (lambda g: setattr(g, "request_id", None), "request_id", "missing"),
    (lambda g: g.user.update(u_colour="red"), "user.u_colour", "unknown slot 'u_colour'"),
    (lambda g: g.items[1].sparse.update(colour="red"), "items[1].sparse.colour", "unknown slot"),
    (lambda g: g.user.update(i_category="x"), "user.i_category", "item-side slot, not a user-side one"),
    (lambda g: g.user.update(u_old="x"), "user.u_old", "retired"),
    (lambda g: g.items[0].sparse.update(country_x_category="x"), "items[0].sparse.country_x_category",
     "the client computes it"),
    (lambda g: g.user.update(u_hash="7"), "user.u_hash", "takes ints"),
    (lambda g: g.user.update(u_hash=True), "user.u_hash", "takes ints"),
    (lambda g: g.items[0].sparse.update(i_category=5), "items[0].sparse.i_category", "takes strings"),
    (lambda g: g.user.update(u_tags=["a", 3]), "user.u_tags[1]", "takes strings"),
    (lambda g: g.items[1].dense.update(i_price=float("nan")), "items[1].dense.i_price", "not a finite"),
    (lambda g: g.items[1].dense.update(i_price=1e39), "items[1].dense.i_price", "not a finite"),
    (lambda g: g.user_dense.update(i_price=1.0), "user_dense.i_price", "unknown dense"),
    (lambda g: g.user_dense.update(u_score="high"), "user_dense.u_score", "not a float"),
    (lambda g: setattr(g, "user_id", "42"), "user_id", "not an int"),
    (lambda g: setattr(g, "ts_ms", -1), "ts_ms", "out of range"),
    (lambda g: setattr(g.items[0], "item_id", 2**63), "items[0].item_id", "out of range"),
    (lambda g: setattr(g.items[0], "position", 2**31), "items[0].position", "out of range"),
    (lambda g: g.items.clear(), "items", "no shown item"),
    (lambda g: [g.add_item(i, {"i_hash": i}) for i in range(100, 500)], "items", "more than the joiner takes"),
    (lambda g: g.add_item(11, {"i_hash": 11}), "items[2].item_id", "shown twice"),
    # past the C path's 64 items on its stack (its ids are sorted to find one shown twice)
    (lambda g: [g.add_item(i, {"i_hash": i}) for i in [*range(100, 170), 100]], "items[72].item_id", "shown twice"),
])
def test_bad_input_is_refused_naming_the_field(mutate, field: str, words: str) -> None:
    e = bad(mutate)
    assert e.field == field and words in e.message, e


def test_bad_actions_are_refused_naming_the_field() -> None:
    for log, field in [(ActionLog("r", 1, "share", 5), "action"), (ActionLog("", 1, "click", 5), "request_id"),
                       (ActionLog("r", 1.5, "click", 5), "item_id"),
                       (ActionLog("r", 1, "click", 5, math.inf), "value"),
                       (ActionLog("ü" * 3000, 1, "click", 5), "request_id")]:  # 6000 bytes: more than 4096
        with pytest.raises(SpecError) as e:
            ENC.encode(log)
        assert e.value.field == field


# ---- whatever the client sends, the joiner joins as it is ---------------------------------------
ints = st.integers(-2**63, 2**63 - 1)
strs = st.text(max_size=6)
VALID = {"u_hash": ints, "u_country": strs, "u_tags": st.lists(strs, max_size=3), "i_hash": ints,
         "i_category": st.one_of(strs, st.lists(strs, max_size=3)),
         "u_score": st.floats(width=32, allow_nan=False, allow_infinity=False),
         "i_price": st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6))}
anything = st.one_of(st.integers(-2**70, 2**70), strs, st.booleans(), st.floats(), st.none(),
                     st.lists(st.one_of(st.integers(-5, 5), strs), max_size=3))


def rarely(draw: st.DrawFn, bad: st.SearchStrategy, good: st.SearchStrategy) -> Any:
    """``good`` nine times in ten, else ``bad``."""
    return draw(bad) if draw(st.integers(0, 9)) == 9 else draw(good)  # (hypothesis favours 0)


def side_map(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    """A valid map of ``names``; one time in ten with one more entry: anything at all, under any name."""
    m = draw(st.fixed_dictionaries({}, optional={n: VALID[n] for n in names}))
    if draw(st.integers(0, 9)) == 9:
        m[draw(st.sampled_from([*VALID, "u_old", "country_x_category", "nope"]))] = draw(anything)
    return m


@st.composite
def feature_logs(draw: st.DrawFn) -> FeatureLog:
    """Feature logs that are mostly valid, with now and then something wrong (a hand-written log's mistakes)."""
    log = FeatureLog(rarely(draw, st.sampled_from(["", None]), st.text(min_size=1, max_size=8)), draw(ints),
                     rarely(draw, st.integers(-5, -1), st.integers(0, 2**45)),
                     side_map(draw, ["u_hash", "u_country", "u_tags"]), side_map(draw, ["u_score"]), source=draw(strs))
    for _ in range(rarely(draw, st.just(0), st.integers(1, 4))):
        log.add_item(rarely(draw, anything, ints), side_map(draw, ["i_hash", "i_category"]),
                     side_map(draw, ["i_price"]), rarely(draw, st.integers(-2**32, 2**32), st.none()))
    return log


def engine(tmp) -> JoinEngine:
    cfg = JoinerConfig()
    eng = JoinEngine(cfg, SPEC, StateStore.open(cfg, tmp), "f", "a")
    eng.restore([("f", 0), ("a", 0)])
    return eng


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=feature_logs())
def test_what_the_client_sends_the_joiner_accepts_as_is(log: FeatureLog, tmp_path_factory) -> None:
    try:
        data = ENC.encode(log)
    except SpecError:
        event("refused")
        return  # refused: nothing sent
    event("sent")
    assert data == reference(log)  # the bytes of the record built straight from the spec
    rec = codec.decode(data, expect="FeatureLog")[1]
    verdict = Validator(SPEC).features(rec)
    assert verdict.reason == "" and verdict.dropped == [] and verdict.record is rec
    eng = engine(tmp_path_factory.mktemp("j"))
    got = eng._features(data)  # the embedded runtime's path on the very bytes
    assert got["request_id"] == rec["request_id"] and shown_ids(got) == [it["item_id"] for it in rec["items"]]
    assert eng._last[0] == data[10:]  # joined as sent
    # on the compiled fast path, unless a non-ASCII source sends it to the codec (which checks its UTF-8)
    assert (eng._last[1] is not None) == rec["source"].isascii()
    eng.store.close()


def outcome(enc: LogEncoder, log: FeatureLog | ActionLog) -> tuple[str, Any]:
    try:
        return "sent", enc.encode(log)
    except SpecError as e:
        return "refused", (e.field, e.message)


@settings(max_examples=150, deadline=None)
@given(logs=st.lists(feature_logs(), min_size=1, max_size=5), data=st.data())
def test_the_c_and_python_paths_agree_message_for_message(logs: list[FeatureLog], data: st.DataObject) -> None:
    """Differential: one encoder on each path, the same logs in the same order, sent twice (cache
    hits), with items changed in place between sends and actions after each: the same bytes, or
    the same error naming the same field."""
    c, py = LogEncoder(SPEC, max_message_bytes=4096), LogEncoder(SPEC, max_message_bytes=4096, native=False)
    c.native = NATIVE  # (the Python run of this module hides it from new encoders)
    assert c.native is not None and py.native is None
    for log in logs + logs:
        assert outcome(c, log) == outcome(py, log)
        for it in log.items:
            a = ActionLog(log.request_id, it.item_id, data.draw(st.sampled_from(["click", "view", "share"])),
                          log.ts_ms, data.draw(st.one_of(st.none(), st.floats())))
            assert outcome(c, a) == outcome(py, a)
        if log.items and data.draw(st.booleans()):
            it = log.items[data.draw(st.integers(0, len(log.items) - 1))]
            name = data.draw(st.sampled_from(["i_hash", "i_category", "i_price"]))
            (it.dense if name == "i_price" else it.sparse)[name] = data.draw(st.one_of(VALID[name], anything))


@settings(max_examples=200, deadline=None)
@given(rid=st.text(max_size=6), iid=st.one_of(st.integers(-2**64, 2**64), st.floats()), ts=st.integers(-5, 2**64),
       action=st.sampled_from(["click", "like", "view", "share", ""]),
       value=st.one_of(st.none(), st.floats(width=32), st.floats()))
def test_what_the_client_sends_as_an_action_the_joiner_accepts(rid: str, iid: Any, ts: int, action: str,
                                                                value: Any) -> None:
    try:
        data = ENC.encode(ActionLog(rid, iid, action, ts, value))
    except SpecError:
        return
    rec = codec.decode(data, expect="ActionLog")[1]
    assert Validator(SPEC).action(rec).record is rec


# ---- the caches (items, users, crosses, action headers) never change a byte ---------------------
def reference(log: FeatureLog, spec: FeatureSpec = SPEC) -> bytes:
    """``log`` as the codec (fastavro) encodes the record built straight from the spec: no cache."""
    def fids(name: str, v: Any) -> list[int]:
        return [spec.fid(name, int(x) if spec.slots[name].type == "int" else x)
                for x in (v if isinstance(v, list | tuple) else [v])]

    def crosses(side: str, own: dict[str, list[int]], user: dict[str, list[int]]) -> dict[str, list[int]]:
        out = {}
        for name, c in spec.crosses.items():
            a, b = (own.get(s, user.get(s)) for s in c.of)
            if not c.retired and spec.side(name) == side and a is not None and b is not None:
                out[name] = [spec.cross_fid(name, x, y) for x in a for y in b]
        return out

    user = {n: fids(n, v) for n, v in log.user.items()}
    items = []
    for j, it in enumerate(log.items):
        own = {n: fids(n, v) for n, v in it.sparse.items()}
        items.append({"item_id": int(it.item_id), "position": j if it.position is None else it.position,
                      "sparse": own | crosses("item", own, user), "dense": {n: float(v) for n, v in it.dense.items()}})
    return codec.encode("FeatureLog", {
        "request_id": log.request_id, "user_id": log.user_id, "ts_ms": log.ts_ms,
        "user_sparse": user | crosses("user", user, {}), "user_dense": dict(log.user_dense), "items": items,
        "source": log.source})


def test_a_log_reused_and_mutated_between_sends_is_encoded_as_it_is_now() -> None:
    """An application may keep one dict and change it: every send is keyed on the values it has
    then (never on the objects), and a value equal to a cached one but of another type is refused."""
    enc = LogEncoder(SPEC, max_message_bytes=4096)
    log = good_log()
    first = enc.encode(log)
    assert first == reference(log) == enc.encode(log)  # a miss, then a hit
    sparse, user = log.items[0].sparse, log.user
    for change in (lambda: sparse.update(i_category="bags"), lambda: sparse.update(i_category=["bags"]),
                   lambda: sparse["i_category"].append("x"), lambda: sparse.update(i_category=("bags", "shoes")),
                   lambda: sparse.pop("i_category"), lambda: sparse.update(i_category="shoes"),
                   lambda: log.items[0].dense.update(i_price=-0.0), lambda: log.items[0].dense.update(i_price=0),
                   lambda: log.items[0].dense.update(i_price=0.0), lambda: log.items[0].dense.clear(),
                   lambda: user.update(u_country="fr"), lambda: user["u_tags"].append("c"), lambda: user.pop("u_hash"),
                   lambda: log.user_dense.update(u_score=-0.0), lambda: log.user_dense.update(u_score=0),
                   lambda: log.user_dense.update(u_score=0.0), lambda: log.user_dense.clear(),
                   lambda: setattr(log.items[0], "position", 3), lambda: setattr(log.items[0], "item_id", 13),
                   lambda: log.items.reverse(), lambda: log.items.reverse()):
        change()
        assert enc.encode(log) == reference(log)
    assert enc.encode(log) != first
    # cached values, of another type: refused as before any cache (1 == 1.0 == True, same hash)
    for field, mutate in [
        ("items[0].sparse.i_hash", lambda g: g.items[0].sparse.update(i_hash=float(g.items[0].sparse["i_hash"]))),
        ("items[0].sparse.i_hash", lambda g: g.items[0].sparse.update(i_hash=np.int64(11).tobytes())),
        ("items[1].sparse.i_hash", lambda g: g.items[1].sparse.update(i_hash=np.int64(12).tobytes())),
        ("user.u_hash", lambda g: g.user.update(u_hash=True)),
        ("user_dense.u_score", lambda g: g.user_dense.update(u_score=True)),
        ("items[0].item_id", lambda g: setattr(g.items[0], "item_id", 11.0)),
        ("items[0].dense.i_price", lambda g: g.items[0].dense.update(i_price=True)),
    ]:
        log = good_log()
        log.user["u_hash"] = 1
        enc.encode(log)  # cached first
        mutate(log)
        with pytest.raises(SpecError) as e:
            enc.encode(log)
        assert e.value.field.startswith(field), e.value


def test_values_that_are_not_plain_are_encoded_never_cached() -> None:
    """A numpy int, a mapping that is not a dict: encoded as their values say, kept out of the caches."""
    from types import MappingProxyType

    enc = LogEncoder(SPEC, max_message_bytes=4096)
    log = good_log()  # its second item carries a numpy int
    log.add_item(np.int32(14), MappingProxyType({"i_hash": np.int64(14), "i_category": "x"}),
                 MappingProxyType({"i_price": np.float32(2.5).item()}))
    for _ in range(2):
        assert enc.encode(log) == reference(log)
    # plain: the first item, the first two dense maps (the C path gives the log with the numpy int to
    # the Python loop, after caching what came before it)
    assert len(enc.items) == 1 and len(enc.item_denses) == 2
    assert len(enc.native_items) <= 1 and len(enc.native_denses) <= 2


# the items' fast path takes no item cross or one user x item cross (SPEC); these take the loop
CROSSES = {"no item cross": {"hash_x_country": SPEC.crosses["hash_x_country"]},
           "item x item, user x item": {**SPEC.crosses, "hash_x_cat": {"number": 303, "of": ["i_hash", "i_category"]}},
           "item first": {"cat_x_country": {"number": 304, "of": ["i_category", "u_country"]}}}


@pytest.mark.parametrize("size,crosses", [(1, None), (2, None), (5, None), (1000, None),
                                          *((3, c) for c in CROSSES), *((1000, c) for c in CROSSES)])
def test_bounded_caches_evict_without_changing_a_byte(size: int, crosses: str | None) -> None:
    """Logs drawn from a few values (hits), past the cache size (evictions), against the codec."""
    rng = np.random.default_rng(size)
    spec = SPEC if crosses is None else FeatureSpec.model_validate(
        {**SPEC.model_dump(exclude={"crosses", "file"}), "crosses": {
            n: c if isinstance(c, dict) else c.model_dump() for n, c in CROSSES[crosses].items()}})
    enc = LogEncoder(spec, max_message_bytes=4096, fid_cache_size=size)
    countries, cats = ["de", "fr", "it", "ü"], ["shoes", "bags", "hats", "socks", "🧦"]
    for n in range(300):
        log = FeatureLog(f"r{n % 7}", int(rng.integers(0, 5)), 1_700_000_000_000 + n,
                         {"u_hash": int(rng.integers(0, 4)), "u_country": str(rng.choice(countries)),
                          "u_tags": [str(t) for t in rng.choice(cats, int(rng.integers(0, 3)))]},
                         {"u_score": float(rng.integers(0, 3))} if n % 2 else {})
        for i in rng.choice(12, int(rng.integers(1, 6)), replace=False):
            sparse: dict[str, Any] = {"i_hash": int(i)}
            if i % 3:
                sparse["i_category"] = [str(c) for c in rng.choice(cats, int(i % 3))] if i % 2 else str(cats[i % 5])
            log.add_item(int(i), sparse, {"i_price": float(rng.integers(0, 3)) / 2} if i % 4 else {})
        assert enc.encode(log) == reference(log, spec), n
        assert max(len(enc.items), len(enc.item_denses), len(enc.users), len(enc.native_items),
                   len(enc.native_denses), len(enc.native_cross), *map(len, enc.native_cross.values())) <= size
        assert all(len(c.cache) <= size and len(c.pairs) <= size for c in enc.item_crosses + enc.user_crosses)
        for k in rng.choice(len(log.items), int(rng.integers(1, 4))):
            it = log.items[k]
            a = ActionLog(log.request_id, it.item_id, str(rng.choice(["click", "like", "view"])), log.ts_ms + 9,
                          None if k % 2 else float(k))
            assert enc.encode(a) == codec.encode("ActionLog", a.record())


def test_an_action_is_refused_exactly_when_its_bytes_exceed_the_limit() -> None:
    """The per-request check of the action header: around the limit, refused iff the codec's bytes are longer."""
    enc = LogEncoder(SPEC, max_message_bytes=100)
    for n in range(60, 90):
        for a in (ActionLog("r" * n, 3, "view", 5), ActionLog("r" * n, 2**40, "click", 2**50, 1.5),
                  ActionLog("r" * n, 3, "view", 5)):
            size = len(codec.encode("ActionLog", a.record()))
            if size > 100:
                with pytest.raises(SpecError, match="more than the joiner takes"):
                    enc.encode(a)
            else:
                assert enc.encode(a) == codec.encode("ActionLog", a.record())


@pytest.mark.parametrize("heads", [1, 3, 1 << 16])
def test_the_action_fast_path_gives_the_codecs_bytes_and_key(heads: int) -> None:
    """Actions across the fast path's edges (request ids remembered or evicted, item ids and
    timestamps around the cached varint tables, values, a request id near the size limit),
    interleaved as a feed's are: the same key and bytes as the codec's, or refused by both rules."""
    rng = np.random.default_rng(heads)
    enc = LogEncoder(SPEC, max_message_bytes=100, request_cache_size=heads)
    rids = [f"r{i}" for i in range(6)] + ["ü" * 30, "x" * 71, "x" * 72]  # the last two: around the limit
    iids = [0, 1, 8191, 8192, -1, 2**40, -2**63, 2**63 - 1]
    tss = [0, 1, 8191, 8192, 16383, 16384, 1_700_000_000_000, 2**63 - 1]
    fast = 0
    for n in range(3000):
        rid = str(rng.choice(rids))
        if n % 50 == 0:  # a feature log remembers its request id for the actions that follow
            log = FeatureLog(rid, 1, 5, items=[]).add_item(3, {"i_hash": 3})
            if len(reference(log)) > 100:
                with pytest.raises(SpecError, match="more than the joiner takes"):
                    enc.feature_message(log)
            else:
                assert enc.feature_message(log) == (rid.encode(), reference(log))
        a = ActionLog(rid, int(rng.choice(iids)) if n % 3 else int(rng.integers(0, 9000)),
                      str(rng.choice(["click", "like", "view"])),
                      int(rng.choice(tss)) if n % 4 else 1_700_000_000_000 + int(rng.integers(0, 10**9)),
                      None if n % 5 else float(rng.integers(-3, 3)))
        want = codec.encode("ActionLog", a.record())
        fast += rid in enc.heads
        if len(want) > 100:
            with pytest.raises(SpecError) as e:
                enc.action_message(a)
            assert e.value.field == "request_id"
        else:
            assert enc.action_message(a) == (rid.encode(), want), a
        assert len(enc.heads) <= heads
    assert fast > 100  # the fast path was taken (and gave the same bytes)
