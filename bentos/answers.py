"""What the service answers (response models) and the feedback it takes; the request record itself is
generated from the served model's dataset config (``tasks.serving.schema.request_model``)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Prediction(BaseModel):
    """A yes/no model's answer: the probability of yes and the label at the answering version's
    threshold."""

    request_id: str = Field(description="issued by the service: the id to send feedback for")
    correlation_id: str | None = Field(None, description="the caller's own id, as sent")
    probability: float = Field(description="the probability of yes (calibrated)")
    label: int = Field(description="1 (yes) when the probability reaches the version's threshold, else 0")
    model_version: int
    arm: Literal["champion", "challenger"]
    shadow_version: int | None = None
    shadow_probability: float | None = None


class ValuePrediction(BaseModel):
    """A regression model's answer: the predicted number."""

    request_id: str = Field(description="issued by the service: the id to send feedback for")
    correlation_id: str | None = Field(None, description="the caller's own id, as sent")
    value: float = Field(description="the predicted value of the target")
    model_version: int
    arm: Literal["champion", "challenger"]
    shadow_version: int | None = None
    shadow_value: float | None = None


class ClassPrediction(BaseModel):
    """A multiclass model's answer: the most probable class and every class's probability."""

    request_id: str = Field(description="issued by the service: the id to send feedback for")
    correlation_id: str | None = Field(None, description="the caller's own id, as sent")
    predicted_class: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="class -> probability, for every class")
    model_version: int
    arm: Literal["champion", "challenger"]
    shadow_version: int | None = None
    shadow_class: str | None = None


class Scored(BaseModel):
    """A yes/no model's answers for many rows, column by column (the shape /predict_columns returns)."""

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


class KindScored(BaseModel):
    """Answers of a regression or multiclass model for many rows, column by column: ``ROW`` is the
    one-row answer, ``PER_ROW`` its per-row fields (each a column here, under the same name)."""

    ROW: ClassVar[type[BaseModel]]
    PER_ROW: ClassVar[tuple[str, ...]]

    ids: list[str]
    correlation_ids: list[str | None]
    model_version: list[int]
    arm: list[str]
    shadow_version: int | None = None

    def predictions(self) -> list[Any]:
        """The same answers, one ``ROW`` per row."""
        columns = {
            "request_id": self.ids,
            "correlation_id": self.correlation_ids,
            "model_version": self.model_version,
            "arm": self.arm,
            **{name: getattr(self, name) for name in self.PER_ROW},
        }
        return [
            self.ROW.model_construct(
                shadow_version=self.shadow_version, **{k: v[i] for k, v in columns.items()}
            )
            for i in range(len(self.ids))
        ]


class ValueScored(KindScored):
    ROW = ValuePrediction
    PER_ROW = ("value", "shadow_value")
    value: list[float]
    shadow_value: list[float | None]


class ClassScored(KindScored):
    ROW = ClassPrediction
    PER_ROW = {
        "predicted_class": "predicted_class",
        "probabilities": "probabilities",
        "shadow_class": "shadow_class",
    }
    predicted_class: list[str]
    probabilities: list[dict[str, float]]
    shadow_class: list[str | None]


# what a model of each target kind answers: one row, and many rows column by column
ANSWERS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "binary": (Prediction, Scored),
    "regression": (ValuePrediction, ValueScored),
    "multiclass": (ClassPrediction, ClassScored),
}


class FeedbackItem(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")  # no 0 for false, no true for 1
    request_id: str = Field(min_length=1, max_length=128, description="the id /predict returned")
    outcome: int = Field(
        ge=0, le=1, description="the observed label (1 = positive, e.g. arrived > 15 min late)"
    )
    correction: bool = Field(
        False, description="replace an outcome reported before (otherwise the first one reported counts)"
    )


class ValueFeedbackItem(BaseModel):
    """An observed value, for a regression model."""

    model_config = ConfigDict(strict=True, extra="forbid")
    request_id: str = Field(min_length=1, max_length=128, description="the id /predict returned")
    outcome: float = Field(allow_inf_nan=False, description="the observed value of the target")
    correction: bool = Field(
        False, description="replace an outcome reported before (otherwise the first one reported counts)"
    )


class ClassFeedbackItem(BaseModel):
    """An observed class, for a multiclass model (one of the classes its answers name)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    request_id: str = Field(min_length=1, max_length=128, description="the id /predict returned")
    outcome: str = Field(min_length=1, max_length=200, description="the observed class")
    correction: bool = Field(
        False, description="replace an outcome reported before (otherwise the first one reported counts)"
    )


# the outcome a caller reports, per target kind
FEEDBACK_ITEMS: dict[str, type[BaseModel]] = {
    "binary": FeedbackItem,
    "regression": ValueFeedbackItem,
    "multiclass": ClassFeedbackItem,
}


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
