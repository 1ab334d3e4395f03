"""driftloop's domain, stage by stage, as layers: core < data < model < registry < serving <
monitoring < decisions. Nothing here imports Prefect; the Prefect steps over it are in ``flows/steps/``."""
