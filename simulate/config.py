"""Settings of the live simulation (section ``[simulate]``, `streamrec simulate`).

The defaults finish in about three minutes on two busy cores (6,000 requests at 40/s);
``quick()`` is the preset the test and ``--quick`` use (every code path, 30 s of traffic). Which
actions are labels, and their names, come from the feature spec; here only how a simulated user
produces them (``min_rating`` and ``base_rate`` must name every label: checked at start).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from streamrec.section import Section


class SimulateConfig(Section):
    out_dir: Path = Field(Path(".run/simulate"), description="each run writes <out_dir>/<time>/ (latest links it)")
    seed: int = 5
    # ---- the data: who the users are and what they like -----------------------------------------------
    batch_share: float = Field(
        0.5, gt=0, lt=1, description="the first share of the MovieLens ratings (by time) the starting model is "
        "batch-trained on; the simulated users react by their later ratings, which no model sees")
    min_ratings: int = Field(20, ge=1, description="a user takes part with at least this many later ratings")
    users: int = Field(0, ge=0, description="simulated users (the most active first); 0 = all that qualify")
    # ---- the feed ---------------------------------------------------------------------------------
    candidates: int = Field(50, ge=2, description="items the model server ranks per request (not shown to "
                            "this user before)")
    rated_share: float = Field(0.3, ge=0, le=1, description="share of the candidates drawn from the items the "
                               "user rated later (the rest: items the user never rated, by popularity)")
    show: int = Field(10, ge=1, description="top-k of the ranking the user sees (impressions)")
    requests: int = Field(6000, ge=2, description="feed requests in the run (both arms)")
    rate: float = Field(40.0, gt=0, description="feed requests per wall second at most")
    windows: int = Field(6, ge=1, description="report windows (equal numbers of requests)")
    online_share: float = Field(0.5, gt=0, lt=1, description="share of users in the online arm (by user-id hash)")
    # ---- reactions --------------------------------------------------------------------------------
    impression_action: str = Field("impression", description="the action logged for every shown item")
    min_rating: dict[str, float] = Field(
        default_factory=lambda: {"click": 4.0, "like": 5.0},
        description="label -> the lowest rating that produces it (a shown item the user rated)")
    base_rate: dict[str, float] = Field(
        default_factory=lambda: {"click": 0.02, "like": 0.004},
        description="label -> its probability for a shown item the user never rated (one draw per item: a "
        "lower rate's label comes only with the higher ones)")
    # ---- event time -------------------------------------------------------------------------------
    speed: float = Field(60.0, gt=0, description="event seconds per wall second (so joiner windows close fast)")
    impression_delay_max_ms: int = Field(2_000, ge=0, description="an impression within this of the request")
    delay_median_s: float = Field(8.0, gt=0, description="median delay of the first label after the request, "
                                  "and of each next one after the previous (log-normal)")
    delay_sigma: float = Field(1.0, gt=0)
    delay_max_s: float = Field(200.0, gt=0, description="longest delay (keep below joiner.window_ms: every "
                               "action then joins)")
    # ---- the pipeline the run starts ----------------------------------------------------------------
    sparse_sync_interval_s: float = Field(1.0, gt=0, description="the online trainer's trainer.sparse_sync_interval_s")
    dense_sync_interval_s: float = Field(3.0, gt=0, description="the online trainer's trainer.dense_sync_interval_s")
    probe_items: int = Field(20, ge=1, description="items of the fixed probe request scored (unlogged) at every "
                             "window's end by both arms: the frozen arm's scores must not move")
    start_timeout_s: float = Field(180.0, gt=0, description="stages must be ready within this")
    drain_timeout_s: float = Field(120.0, gt=0, description="the last examples must be joined within this")

    @field_validator("base_rate")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        for label, p in v.items():
            if not 0 <= p <= 1:
                raise ValueError(f"{label}: a probability in [0, 1], got {p}")
        return v

    @model_validator(mode="after")
    def _feed(self) -> SimulateConfig:
        if self.show > self.candidates:
            raise ValueError(f"show ({self.show}) must not exceed candidates ({self.candidates})")
        if self.windows > self.requests:
            raise ValueError(f"windows ({self.windows}) must not exceed requests ({self.requests})")
        return self

    def quick(self) -> SimulateConfig:
        """The test's preset: a quarter of the ratings for the starting model, 120 users, 900 requests
        (30 s of traffic), fast syncs."""
        return self.model_copy(update={"batch_share": 0.25, "requests": 900, "rate": 30.0, "windows": 3, "users": 120,
                                       "candidates": 30, "show": 6, "sparse_sync_interval_s": 0.5,
                                       "dense_sync_interval_s": 1.5})
