"""Settings of the log replay (MovieLens or the synthetic generator)."""

from pydantic import Field

from streamrec.section import Section


class ReplayConfig(Section):
    seed: int = 7
    items_per_request: int = Field(10, ge=1, description="K: the rated item plus K-1 sampled by popularity")
    click_min_rating: float = Field(4.0, description="a rating >= this becomes a click")
    like_min_rating: float = Field(5.0, description="a rating >= this also becomes a like (second task)")
    speed: float = Field(
        1000.0, gt=0, description="event-time compression: dataset seconds per event-time second"
    )
    rate: float = Field(0.0, ge=0, description="cap on messages/s sent; 0 = as fast as possible")
    limit: int = Field(0, ge=0, description="ratings replayed; 0 = all")
    duplicate_share: float = Field(0.05, ge=0, le=1, description="share of actions sent twice")
    early_share: float = Field(
        0.05, ge=0, le=1, description="share of actions sent before their feature log"
    )
    disorder_max_ms: int = Field(
        20_000, ge=0, description="bound on how far an early or duplicate send strays in event time"
    )
    impression_delay_max_ms: int = Field(2_000, ge=0)
    delay_median_s: float = Field(5.0, gt=0, description="median action delay (log-normal body)")
    delay_sigma: float = Field(1.5, gt=0, description="log-normal sigma of the delay body")
    delay_tail_share: float = Field(
        0.05, ge=0, le=1, description="share of delays drawn from the Pareto tail (hours to days)"
    )
    delay_tail_min_s: float = Field(3600.0, gt=0)
    delay_tail_alpha: float = Field(1.2, gt=0, description="Pareto shape of the tail")
    delay_max_s: float = Field(3 * 86400.0, gt=0)
    synthetic_users: int = Field(100_000, ge=1)
    synthetic_items: int = Field(50_000, ge=1)
    synthetic_zipf: float = Field(1.1, gt=1.0)
