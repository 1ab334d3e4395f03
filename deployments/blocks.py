"""The Prefect blocks the cloud flows use, created idempotently from the environment, flags or the stack.

    python -m deployments.blocks --from-stack driftloop                 # bucket + W&B key from the stack
    python -m deployments.blocks --bucket my-bucket --store-prefix driftloop --wandb-api-key-env WANDB_API_KEY

Blocks (names come from the cloud job variables in prefect.yaml, so the flows find what this makes):
- ``AwsCredentials``: region, optional endpoint, and keys only with ``--keys-from-env`` (on ECS leave
  them out: the flow task role gives access, so no key exists anywhere);
- ``S3Bucket``: Prefect result storage under ``<store prefix>/prefect-results`` in the artifact bucket,
  so cached task results survive between ECS tasks;
- ``Secret``: the W&B API key, from an environment variable or the stack's Secrets Manager entry.

Secrets are never printed: the report says created / updated / unchanged per block. Everything is
checked before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from deployments import prefect_file
from deployments.aws import SetupError, run_setup, secret_value, stack_outputs


def block_names() -> dict[str, str]:
    """Block names the cloud deployments are configured with (prefect.yaml, cloud job variables)."""
    env = prefect_file.pool("cloud")["job_variables"]["env"]
    return {
        "aws": env["DRIFTLOOP_S3__CREDENTIALS_BLOCK"],
        "results": env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"].removeprefix("s3-bucket/"),
        "wandb": env["DRIFTLOOP_TRACKING__API_KEY_BLOCK"],
    }


def desired_blocks(
    *,
    bucket: str,
    store_prefix: str,
    region: str,
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    wandb_api_key: str | None,
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """name -> Block instance to save."""
    from prefect.blocks.system import Secret
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    names = names or block_names()
    if bool(access_key_id) != bool(secret_access_key):
        raise SetupError(
            "AWS keys: give both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (task role)"
        )
    credentials = AwsCredentials(
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url)
        if endpoint_url
        else AwsClientParameters(),
    )
    blocks: dict[str, Any] = {
        names["aws"]: credentials,
        names["results"]: S3Bucket(
            bucket_name=bucket,
            bucket_folder=f"{store_prefix.strip('/')}/prefect-results",
            credentials=credentials,
        ),
    }
    if wandb_api_key is not None:
        if len(wandb_api_key.strip()) < 8:
            raise SetupError(
                "the W&B API key is empty or too short; check the variable or secret it comes from"
            )
        blocks[names["wandb"]] = Secret(value=wandb_api_key.strip())
    return blocks


def _dump(block: Any) -> Any:
    """A block's fields, secrets included, without the bookkeeping a saved block carries (``_block_*``)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.startswith("_")}
        return value

    return strip(block.model_dump(mode="json", context={"include_secrets": True}))


def apply_blocks(blocks: dict[str, Any]) -> dict[str, str]:
    """Save each block unless an equal one is already stored; returns name -> action."""
    actions: dict[str, str] = {}
    for name, block in blocks.items():
        try:
            existing = type(block).load(name)
        except ValueError:
            existing = None
        if existing is not None and _dump(existing) == _dump(block):
            actions[name] = "unchanged"
            continue
        block.save(name, overwrite=True)
        actions[name] = "created" if existing is None else "updated"
    return actions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.blocks", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--from-stack", metavar="STACK", help="bucket, store prefix and W&B secret from this stack"
    )
    parser.add_argument("--bucket", help="artifact bucket (default: the stack's)")
    parser.add_argument(
        "--store-prefix", default=None, help="store prefix in the bucket (default: the stack's)"
    )
    parser.add_argument(
        "--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    )
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (not needed on AWS)")
    parser.add_argument(
        "--keys-from-env",
        action="store_true",
        help="store AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the block (not needed with a task role)",
    )
    parser.add_argument(
        "--wandb-api-key-env", metavar="VAR", help="read the W&B key from this environment variable"
    )
    parser.add_argument(
        "--wandb-from-stack-secret",
        action="store_true",
        help="read the W&B key from the stack's Secrets Manager entry",
    )
    args = parser.parse_args(argv)

    def step() -> dict[str, str]:
        outputs = stack_outputs(args.from_stack, args.region) if args.from_stack else {}
        bucket = args.bucket or outputs.get("BucketName")
        prefix = args.store_prefix or (
            outputs["StoreUri"].split("/", 3)[3] if "StoreUri" in outputs else None
        )
        if not bucket or not prefix:
            raise SetupError(
                "say where the artifact store is: --from-stack STACK, or --bucket and --store-prefix"
            )
        if not args.region:
            raise SetupError("no AWS region: pass --region or set AWS_REGION")
        wandb_key = None
        if args.wandb_api_key_env:
            wandb_key = os.environ.get(args.wandb_api_key_env)
            if not wandb_key:
                raise SetupError(
                    f"${args.wandb_api_key_env} is not set; export it or use --wandb-from-stack-secret"
                )
        elif args.wandb_from_stack_secret:
            if "WandbApiKeySecretName" not in outputs:
                raise SetupError("--wandb-from-stack-secret needs --from-stack")
            wandb_key = secret_value(outputs["WandbApiKeySecretName"], args.region)
        keys = (
            (os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"))
            if args.keys_from_env
            else (None, None)
        )
        if args.keys_from_env and not all(keys):
            raise SetupError("--keys-from-env: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set")
        blocks = desired_blocks(
            bucket=bucket,
            store_prefix=prefix,
            region=args.region,
            endpoint_url=args.endpoint_url,
            access_key_id=keys[0],
            secret_access_key=keys[1],
            wandb_api_key=wandb_key,
        )
        prefect_file.require_prefect_api()
        return apply_blocks(blocks)

    return run_setup(step, "block")


if __name__ == "__main__":
    sys.exit(main())
