"""Error types that tell bad input (fix it, do not retry) apart from flaky I/O (retry it).

Every ``BadInput`` message names the thing that is wrong and what to do next. Prefect retries skip
them (see ``flows.steps.runtime.retry_unless_bad_input``): retrying a wrong config only wastes time.
"""


class BadInput(ValueError):
    """Data, parameters or configuration are wrong; retrying will not help."""


class SourceUnavailable(RuntimeError):
    """A source (database, API, bucket) could not be reached or answered with an error; retryable."""


class EmptyWindow(BadInput):
    """The requested time window holds no rows."""


class SingleClassTarget(BadInput):
    """The target has only one class in a split; a classifier cannot be trained or scored."""
