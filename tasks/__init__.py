"""driftloop's domain, stage by stage, and the Prefect steps over it (``<stage>/steps.py``)."""
