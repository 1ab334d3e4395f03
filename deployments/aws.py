"""Small AWS lookups shared by the cloud setup scripts: stack outputs, secrets, images.

boto3 finds credentials and region the usual way (env, profile, role); ``AWS_ENDPOINT_URL`` points
every client at another endpoint, which is how the tests use a moto server on 127.0.0.1.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable

ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<repo>[^:@]+)"
    r"(?::(?P<tag>[\w][\w.-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))$"
)


class SetupError(RuntimeError):
    """A cloud setup step cannot go on; the message says what is wrong and what to do."""


def run_setup(step: Callable[[], dict[str, str]], noun: str) -> int:
    """Run a setup step; print ``<noun> <name>: created|updated|unchanged`` or the error. Exit code."""
    try:
        actions = step()
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, action in actions.items():
        print(f"{noun} {name}: {action}")
    return 0


def client(service: str, region: str | None = None) -> Any:
    import boto3

    return boto3.client(service, region_name=region)


def stack_outputs(stack_name: str, region: str | None = None) -> dict[str, str]:
    """The outputs of a CloudFormation stack made from infra/cloudformation/driftloop.yaml."""
    from botocore.exceptions import ClientError

    try:
        stacks = client("cloudformation", region).describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise SetupError(
            f"CloudFormation stack {stack_name!r} not found ({exc.response['Error'].get('Message', exc)}). "
            "Create it first: see README, 'Deploy to AWS', step 1."
        ) from None
    stack = stacks[0]
    if not stack["StackStatus"].endswith("_COMPLETE") or "ROLLBACK" in stack["StackStatus"]:
        raise SetupError(
            f"stack {stack_name!r} is {stack['StackStatus']}; fix it in the CloudFormation console first"
        )
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def secret_arn(name: str, region: str | None = None, *, need_value: bool = False) -> str:
    """The ARN of a Secrets Manager secret; with ``need_value``, also insist a value has been put."""
    from botocore.exceptions import ClientError

    try:
        described = client("secretsmanager", region).describe_secret(SecretId=name)
    except ClientError:
        raise SetupError(
            f"secret {name!r} does not exist in Secrets Manager; the CloudFormation stack creates it"
        ) from None
    if need_value and not described.get("VersionIdsToStages"):
        name = described.get("Name", name)
        raise SetupError(
            f"secret {name!r} has no value yet: `aws secretsmanager put-secret-value --secret-id {name} "
            "--secret-string <value>`"
        )
    return described["ARN"]


def secret_value(name: str, region: str | None = None) -> str:
    secret_arn(name, region, need_value=True)
    return client("secretsmanager", region).get_secret_value(SecretId=name)["SecretString"]


def check_image(image: str) -> None:
    """Raise unless ``image`` names an ECR image that exists (other registries are not checked)."""
    from botocore.exceptions import ClientError

    match = ECR_IMAGE.match(image)
    if not match:
        if "{{" in image or not image.strip():
            raise SetupError(f"image {image!r} is not set: export DRIFTLOOP_IMAGE=<registry>/<repo>:<tag>")
        return
    image_id = {"imageTag": match["tag"]} if match["tag"] else {"imageDigest": match["digest"]}
    try:
        client("ecr", match["region"]).describe_images(
            registryId=match["account"], repositoryName=match["repo"], imageIds=[image_id]
        )
    except ClientError as exc:
        code = exc.response["Error"].get("Code", "")
        raise SetupError(
            f"image {image} does not exist ({code}): build and push it first "
            "(`make image IMAGE=...` then `docker push`; "
            "CI's deploy workflow does both on every push to main)"
        ) from None
