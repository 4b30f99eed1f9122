"""The model server's HTTP API (FastAPI on uvicorn): score, batch score, rows, metrics, health.

Endpoints::

    POST /score        one request -> its candidates ranked, per-head corrected scores, request id
    POST /score/batch  {"requests": [...]} -> {"results": [...]} (one model pass for all of them)
    POST /rows         {"slot": name, "fids": [...]} -> which FIDs serving holds (and their rows)
    GET  /metrics      Prometheus: latency histogram, requests, model version, rows, delta lag, freshness
    GET  /healthz      200 while the process and its delta loop live
    GET  /readyz       200 once bootstrapped (snapshot + deltas up to the end seen at start); 503 before
    GET  /stats        the same facts as JSON (freshness p50/p99 included)

A bad request gets a 4xx whose ``error`` names the field (``candidates[2].sparse.genre: unknown
slot ...``) and the server keeps serving. Every served request's FeatureLog (the FIDs it scored
with, the shown items in rank order) goes to the features topic through the client, so an
action logged later with the returned request id joins back to exactly those features.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.replica import Replica
from serving.requests import BatchRequest, RecordBuilder, RequestError, ScoreRequest


class Service:
    """Scoring and logging over one replica; the HTTP layer only parses and answers."""

    def __init__(self, settings: Any, replica: Replica, client: Any | None) -> None:
        self.cfg = settings.serving
        self.replica = replica
        self.client = client
        self._builder: RecordBuilder | None = None
        self._builder_spec: Any = None

    def builder(self) -> RecordBuilder:
        spec = self.replica.model.spec  # the spec the served weights were trained under
        if self._builder is None or spec is not self._builder_spec:
            self._builder, self._builder_spec = RecordBuilder(spec, self.cfg.source), spec
        return self._builder

    def start_polling(self) -> None:
        """Serve the client's delivery reports on a thread of their own (acks resolve request futures)."""
        if self.client is None:
            return

        def poll() -> None:
            while True:
                self.client.poll(0.05)

        threading.Thread(target=poll, name="log-acks", daemon=True).start()

    def score(self, reqs: list[ScoreRequest], batch: bool,
              acks: list[asyncio.Future] | None = None) -> list[dict[str, Any]]:
        """Score; queue each FeatureLog, with a future per log in ``acks`` when given (resolved on delivery)."""
        if not self.replica.ready:
            raise NotReady()
        b = self.builder()
        labels = b.spec.labels
        logs = []
        for k, r in enumerate(reqs):
            prefix = f"requests[{k}]." if batch else ""
            if len(r.candidates) > self.cfg.max_candidates:
                raise RequestError(prefix + "candidates", f"{len(r.candidates)} candidates, more than "
                                   f"serving.max_candidates = {self.cfg.max_candidates}")
            if r.rank_by is not None and r.rank_by not in labels:
                raise RequestError(prefix + "rank_by", f"unknown head {r.rank_by!r} (the spec's labels: {labels})")
            logs.append(b.record(r, prefix))
        raw = self.replica.model.raw_scores_logs(logs)
        corrected = self.replica.model.correct(raw)
        out = []
        a = 0
        for r, rec in zip(reqs, logs, strict=True):
            z = a + len(rec["items"])
            key = corrected[r.rank_by or labels[0]][a:z]
            order = np.argsort(-key, kind="stable")
            items = []
            for i in order.tolist():
                item = {"item_id": rec["items"][i]["item_id"],
                        "scores": {lb: float(corrected[lb][a + i]) for lb in labels}}
                if r.raw:
                    item["raw"] = {lb: float(raw[lb][a + i]) for lb in labels}
                items.append(item)
            shown = order[: r.show] if r.show else order
            if r.log and self.client is not None:
                self._log(b, r, rec, shown, acks)
            out.append({"request_id": rec["request_id"], "model_version": self.replica.version,
                        "dense_version": self.replica.ps.meta.get("dense_version"), "items": items,
                        "logged": bool(r.log and self.client is not None)})
            a = z
        return out

    def _log(self, b: RecordBuilder, req: ScoreRequest, rec: dict[str, Any], shown: np.ndarray,
             acks: list[asyncio.Future] | None) -> None:
        """The FeatureLog of what was scored: the shown items, in rank order, with their FIDs."""
        cb = None
        if acks is not None:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            acks.append(fut)

            def cb(err: Any, _msg: Any, fut: asyncio.Future = fut) -> None:
                loop.call_soon_threadsafe(_resolve, fut, err)

        self.client.send_encoded(b.encode(req, rec, shown.tolist()), rec["request_id"], rec["ts_ms"], cb)
        self.replica.metrics.logged.inc()


class NotReady(Exception):
    pass


def _resolve(fut: asyncio.Future, err: Any) -> None:
    if not fut.done():
        fut.set_result(err)


def create_app(settings: Any, replica: Replica, client: Any | None) -> FastAPI:
    svc = Service(settings, replica, client)
    svc.start_polling()
    ack = settings.serving.log_ack
    m = replica.metrics
    app = FastAPI(title="streamrec model server", description=__doc__)
    app.state.service = svc

    def fail(endpoint: str, status: int, error: str, **extra: Any) -> JSONResponse:
        m.requests.labels(endpoint, str(status)).inc()
        return JSONResponse({"error": error, **extra}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        fields = [".".join(_loc(e["loc"])) for e in errs]
        msg = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, errs, strict=True))
        return fail(request.url.path, 422, msg, fields=fields)

    async def run(endpoint: str, reqs: list[ScoreRequest], batch: bool) -> Any:
        t0 = time.perf_counter()
        acks: list[asyncio.Future] | None = [] if ack else None
        try:
            out = svc.score(reqs, batch, acks)
        except RequestError as e:
            return fail(endpoint, 422, str(e), fields=[e.field])
        except NotReady:
            return fail(endpoint, 503, "not ready: bootstrapping from the newest snapshot and the deltas after it")
        if acks:
            errors = [e for e in await asyncio.gather(*acks) if e is not None]
            if errors:  # the app must not show what no log records: it may retry
                return fail(endpoint, 503, f"the FeatureLog was not delivered: {errors[0]}")
        m.latency.labels(endpoint).observe(time.perf_counter() - t0)
        m.requests.labels(endpoint, "200").inc()
        m.candidates.inc(sum(len(r.candidates) for r in reqs))
        return out

    @app.post("/score")
    async def score(req: ScoreRequest) -> Any:
        out = await run("/score", [req], False)
        return out[0] if isinstance(out, list) else out

    @app.post("/score/batch")
    async def score_batch(req: BatchRequest) -> Any:
        if len(req.requests) > settings.serving.max_batch:
            return fail("/score/batch", 422, f"requests: {len(req.requests)} requests, more than "
                        f"serving.max_batch = {settings.serving.max_batch}", fields=["requests"])
        out = await run("/score/batch", req.requests, True)
        return {"results": out} if isinstance(out, list) else out

    @app.post("/rows")
    async def rows(body: dict[str, Any]) -> Any:
        if not replica.ready:
            return fail("/rows", 503, "not ready")
        spec = replica.model.spec
        slot, fids = body.get("slot"), body.get("fids")
        if slot not in spec.model_slots:
            return fail("/rows", 422, f"slot: unknown slot {slot!r} (the spec's: {spec.model_slots})", fields=["slot"])
        if not isinstance(fids, list) or not all(type(f) is int for f in fids):
            return fail("/rows", 422, "fids: a list of int64 FIDs", fields=["fids"])
        got, found = replica.ps.tables[spec.number(slot)].lookup_found(fids) if spec.number(slot) in \
            replica.ps.tables else (np.zeros((len(fids), spec.settings(slot).dim)), np.zeros(len(fids), bool))
        m.requests.labels("/rows", "200").inc()
        return {"found": found.tolist(), "rows": got.tolist(), "version": replica.version}

    @app.get("/metrics")
    async def metrics() -> Response:
        m.rows.set(replica.ps.num_rows())
        if client is not None:
            m.log_failed.set(client.metrics()["failed"])
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> Any:
        if not replica.alive:
            return JSONResponse({"ok": False, "error": replica.error or "delta loop stopped"}, status_code=503)
        return {"ok": True}

    @app.get("/readyz")
    async def readyz() -> Any:
        st = replica.stats()
        return JSONResponse(st, status_code=200 if st["ready"] else 503)

    @app.get("/stats")
    async def stats() -> Any:
        return replica.stats()

    return app


def _loc(loc: tuple) -> list[str]:
    """pydantic's location -> the field's path in the body (``candidates[0].item_id``)."""
    out: list[str] = []
    for p in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(p, int) and out:
            out[-1] += f"[{p}]"
        else:
            out.append(str(p))
    return out
