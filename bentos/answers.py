"""What the service answers (response models) and the feedback it takes; the request record itself is
generated from the served model's dataset config (``tasks.serving.schema.request_model``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Prediction(BaseModel):
    request_id: str = Field(description="issued by the service: the id to send feedback for")
    correlation_id: str | None = Field(None, description="the caller's own id, as sent")
    probability: float
    label: int
    model_version: int
    arm: Literal["champion", "challenger"]
    shadow_version: int | None = None
    shadow_probability: float | None = None


class Scored(BaseModel):
    """Answers for many rows, column by column (the shape /predict_columns returns)."""

    ids: list[str]  # issued by the service, one per row
    correlation_ids: list[str | None]
    probability: list[float]
    label: list[int]
    model_version: list[int]
    arm: list[str]
    shadow_version: int | None = None
    shadow_probability: list[float | None]

    def predictions(self) -> list[Prediction]:
        """The same answers, one ``Prediction`` per row."""
        return [
            Prediction.model_construct(
                request_id=i,
                correlation_id=c,
                probability=p,
                label=lab,
                model_version=v,
                arm=a,
                shadow_version=self.shadow_version,
                shadow_probability=sp,
            )
            for i, c, p, lab, v, a, sp in zip(
                self.ids,
                self.correlation_ids,
                self.probability,
                self.label,
                self.model_version,
                self.arm,
                self.shadow_probability,
            )
        ]


class FeedbackItem(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")  # no 0 for false, no true for 1
    request_id: str = Field(min_length=1, max_length=128, description="the id /predict returned")
    outcome: int = Field(
        ge=0, le=1, description="the observed label (1 = positive, e.g. arrived > 15 min late)"
    )
    correction: bool = Field(
        False, description="replace an outcome reported before (otherwise the first one reported counts)"
    )


class RejectedFeedback(BaseModel):
    request_id: str
    reason: str


class FeedbackResult(BaseModel):
    accepted: int = Field(description="outcomes recorded that count (first reports and corrections)")
    ignored: list[RejectedFeedback] = Field(
        [],
        description="outcomes recorded but not counted: the request already had one and this one was "
        "not sent as a correction (the first label stands)",
    )
    rejected: list[RejectedFeedback] = Field(description="items not recorded, with why")


class ModelStatus(BaseModel):
    champion: int | None = None
    challenger: int | None = None
    mode: str
    challenger_share: float
    loaded_at: str | None = None
    last_check: str | None = None
    degraded: str | None = Field(
        None, description="why the champion that answers is not the registry's (a fallback), if it is not"
    )
    problems: list[str]
    predictions_logged: int  # shipped to the store by this worker (each is durable on disk before that)
    log_errors: int  # failed attempts to ship the log to the store (retried; nothing is dropped)
