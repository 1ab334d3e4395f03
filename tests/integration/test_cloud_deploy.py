"""The cloud path end to end, without a cloud: the CloudFormation stack deployed into a moto server,
the work pools, blocks and secrets set up by the project's scripts against a real Prefect server,
the preflight check refusing what would half-deploy, the */cloud deployments registered, and the
training flow run with the cloud deployment's own settings against the bucket the stack made,
with credentials only from blocks, and no secret in any log, artifact, W&B file or stored object."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import boto3
import pytest

from deployments import prefect_file
from tasks.core.settings import PROJECT_DIR
from tests.conftest import SMALL

pytestmark = pytest.mark.integration

STACK = "driftloop"
SENTINEL_AWS_SECRET = "sentinel-aws-secret-5f0c2e9a7b"
SENTINEL_WANDB_KEY = "sentinel-wandb-key-8d41c3f6e2"
TEMPLATE = PROJECT_DIR / "infra" / "cloudformation" / "driftloop.yaml"
DEPLOY_TEMPLATE = PROJECT_DIR / "infra" / "cloudformation" / "github-deploy.yaml"


def _aws(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def _api(read):
    """Run ``read(client)`` against the Prefect API of the test session."""
    from prefect.client.orchestration import get_client

    async def run():
        async with get_client() as client:
            return await read(client)

    return asyncio.run(run())


def _script(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cloud(moto_endpoint, prefect_server):
    """The stack created in moto; env for the setup scripts (boto3 reaches moto via AWS_ENDPOINT_URL)."""
    ec2 = _aws("ec2", moto_endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)
    ]
    cfn = _aws("cloudformation", moto_endpoint)
    start = time.perf_counter()
    cfn.create_stack(
        StackName=STACK,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[
            {
                "ParameterKey": "PrefectApiUrl",
                "ParameterValue": "https://api.prefect.cloud/api/accounts/a/workspaces/w",
            },
            {"ParameterKey": "VpcId", "ParameterValue": vpc},
            {"ParameterKey": "SubnetIds", "ParameterValue": ",".join(subnets)},
        ],
    )
    stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
    print(f"\nstack into moto: {time.perf_counter() - start:.2f} s, {stack['StackStatus']}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    # On AWS the stack makes the two secrets without values; moto's CloudFormation skips that type,
    # so make them as the stack would. Their values are put later, as a user does.
    sm = _aws("secretsmanager", moto_endpoint)
    for name in (outputs["PrefectApiKeySecretName"], outputs["WandbApiKeySecretName"]):
        sm.create_secret(Name=name)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": "us-east-1",
        "PREFECT_API_URL": prefect_server.cfg.api_url,
    }
    return {
        "endpoint": moto_endpoint,
        "outputs": outputs,
        "env": env,
        "subnets": subnets,
        "vpc": vpc,
        "status": stack["StackStatus"],
    }


def test_stack_makes_the_bucket_roles_cluster_and_worker(cloud):
    endpoint, out = cloud["endpoint"], cloud["outputs"]
    assert cloud["status"] == "CREATE_COMPLETE"
    s3 = _aws("s3", endpoint)
    bucket = out["BucketName"]
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # moto applies a bucket's encryption and tags from CloudFormation; versioning, the public access
    # block and lifecycle rules are checked in the template (tests/code/test_cloud_files.py)
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert out["StoreUri"] == f"s3://{bucket}/driftloop"

    iam = _aws("iam", endpoint)
    roles = {r["RoleName"]: r for r in iam.list_roles()["Roles"]}
    for name in ("driftloop-task-execution", "driftloop-flow-task", "driftloop-ecs-worker"):
        trust = _doc(roles[name]["AssumeRolePolicyDocument"])
        assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    policy = iam.get_role_policy(RoleName="driftloop-flow-task", PolicyName="artifact-store-prefix")[
        "PolicyDocument"
    ]
    resources = json.dumps(policy)
    assert (
        f"arn:aws:s3:::{bucket}/driftloop/*" in resources and "s3:*" not in resources
    )  # only the store prefix

    ecs = _aws("ecs", endpoint)
    assert ecs.describe_clusters(clusters=["driftloop"])["clusters"][0]["status"] == "ACTIVE"
    (service,) = ecs.describe_services(cluster="driftloop", services=["driftloop-ecs-worker"])["services"]
    task_def = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    (container,) = task_def["containerDefinitions"]
    assert container["image"] == f"{out['FlowsRepositoryUri']}:latest"
    assert container["command"][:5] == ["prefect", "worker", "start", "--pool", "driftloop-ecs"]
    assert [s["name"] for s in container["secrets"]] == ["PREFECT_API_KEY"]  # never a plain env value
    # the worker's observer learns of crashed flow-run tasks from ECS events via an SQS queue
    worker_env = {e["name"]: e["value"] for e in container["environment"]}
    queue = worker_env["PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME"]
    assert queue == out["TaskEventsQueueName"]
    assert _aws("sqs", endpoint).get_queue_url(QueueName=queue)["QueueUrl"]
    (rule,) = _aws("events", endpoint).list_rules(NamePrefix="driftloop-ecs-task-events")["Rules"]
    assert json.loads(rule["EventPattern"])["detail-type"] == ["ECS Task State Change"]
    repos = {r["repositoryName"] for r in _aws("ecr", endpoint).describe_repositories()["repositories"]}
    assert {"driftloop/flows", "driftloop/service"} <= repos
    groups = {g["logGroupName"] for g in _aws("logs", endpoint).describe_log_groups()["logGroups"]}
    assert {"/driftloop/worker", "/driftloop/flow-runs"} <= groups

    # moto's CloudFormation skips some types (their resources exist on AWS); name them, don't hide them
    made = {
        r["LogicalResourceId"]
        for r in _aws("cloudformation", endpoint).list_stack_resources(StackName=STACK)[
            "StackResourceSummaries"
        ]
        if r["LogicalResourceId"]
    }
    from cfnlint.decode import decode_str

    declared, _ = decode_str(TEMPLATE.read_text())
    skipped = sorted(
        {declared["Resources"][k]["Type"] for k in declared["Resources"]}
        - {declared["Resources"][k]["Type"] for k in made}
    )
    print("resource types moto's CloudFormation does not implement (checked by cfn-lint only):", skipped)
    assert not {"AWS::S3::Bucket", "AWS::IAM::Role", "AWS::ECS::Cluster", "AWS::ECS::Service"} & set(skipped)


def test_the_prediction_service_and_the_deploy_identity_stack_into_moto(moto_endpoint):
    """DeployService=true: the service behind a load balancer that checks /readyz, with its own narrow
    task role and token secrets (moto has no Amazon Managed Prometheus, so the metrics collector is
    checked in the template); then the deploy-identity stack: GitHub's main branch only, and a deploy
    role that can pass nothing but the stack-update role, which cannot touch the deploy roles."""
    ec2 = _aws("ec2", moto_endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.30.{i}.0/24", AvailabilityZone=f"us-east-1{az}")[
            "Subnet"
        ]["SubnetId"]
        for i, az in ((1, "a"), (2, "b"))
    ]
    cfn = _aws("cloudformation", moto_endpoint)
    params = {
        "ProjectName": "dlserved",
        "PrefectApiUrl": "https://api.prefect.cloud/api/accounts/a/workspaces/w",
        "VpcId": vpc,
        "SubnetIds": ",".join(subnets),
        "DeployService": "true",
        "ServiceImageTag": "0123abc",
        "ServiceModelName": "caravan-purchase",
        "ServiceMetricsWorkspace": "false",
        "AllowPlainHttp": "true",  # a test stack; the template's Rules refuse it otherwise (moto skips Rules)
    }
    out = _create_stack(cfn, "driftloop-served", TEMPLATE, params)
    assert out["ServiceUrl"].startswith("http://") and out["ServiceName"] == "dlserved-service"

    elb = _aws("elbv2", moto_endpoint)
    (lb,) = [
        b
        for b in elb.describe_load_balancers()["LoadBalancers"]
        if b["LoadBalancerName"] == "dlserved-service"
    ]
    assert lb["Scheme"] == "internet-facing" and out["ServiceUrl"] == f"http://{lb['DNSName']}"
    (group,) = elb.describe_target_groups(LoadBalancerArn=lb["LoadBalancerArn"])["TargetGroups"] or [
        g for g in elb.describe_target_groups()["TargetGroups"] if g["TargetGroupName"] == "dlserved-service"
    ]
    assert (group["HealthCheckPath"], group["TargetType"], group["Port"]) == ("/readyz", "ip", 3000)
    (listener,) = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert (
        listener["Port"] == 80 and listener["DefaultActions"][0]["TargetGroupArn"] == group["TargetGroupArn"]
    )

    ecs = _aws("ecs", moto_endpoint)
    (service,) = ecs.describe_services(cluster="dlserved", services=["dlserved-service"])["services"]
    assert service["desiredCount"] == 2  # ServiceMinCount: one stays up while the other is replaced
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    (container,) = task["containerDefinitions"]  # no metrics collector without a workspace
    assert container["image"] == f"{out['ServiceRepositoryUri']}:0123abc"
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["DRIFTLOOP_SERVING__MODEL_NAME"] == "caravan-purchase"
    assert env["DRIFTLOOP_STORE_URI"] == out["StoreUri"]
    assert {s["name"] for s in container["secrets"]} == {
        "DRIFTLOOP_SERVING__AUTH_TOKEN",
        "DRIFTLOOP_SERVING__FEEDBACK_TOKEN",
    }
    assert not any("TOKEN" in e["name"] for e in container["environment"])  # tokens only as secrets

    iam = _aws("iam", moto_endpoint)
    policy = json.dumps(
        iam.get_role_policy(RoleName="dlserved-service-task", PolicyName="registry-read-logs-write")[
            "PolicyDocument"
        ]
    )
    assert "s3:*" not in policy and "s3:DeleteObject" not in policy
    for prefix in ("registry/*", "predictions/*", "feedback/*", "state/serving/*"):
        assert f"/driftloop/{prefix}" in policy, prefix

    deploy_params = {
        "ProjectName": "dlserved",
        "MainStackName": "driftloop-served",
        "GitHubRepository": "acme/driftloop",
        "ArtifactBucketName": out["BucketName"],
    }
    deploy_out = _create_stack(cfn, "driftloop-served-deploy", DEPLOY_TEMPLATE, deploy_params)
    trust = _doc(iam.get_role(RoleName="dlserved-github-deploy")["Role"]["AssumeRolePolicyDocument"])
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"]["StringEquals"] == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": "repo:acme/driftloop:ref:refs/heads/main",
    }
    deploy_policy = _doc(
        iam.get_role_policy(RoleName="dlserved-github-deploy", PolicyName="deploy-driftloop")[
            "PolicyDocument"
        ]
    )
    (passing,) = [s for s in deploy_policy["Statement"] if s["Action"] == "iam:PassRole"]
    assert passing["Resource"] == deploy_out["StackUpdateRoleArn"]  # the runner cannot pass task roles
    update_policy = _doc(
        iam.get_role_policy(RoleName="dlserved-deploy-stack-update", PolicyName="update-the-driftloop-stack")[
            "PolicyDocument"
        ]
    )
    role_arns = [
        r for st in update_policy["Statement"] if st["Sid"].startswith("OnlyThe") for r in st["Resource"]
    ]
    assert role_arns and not [r for r in role_arns if "deploy" in r or r.endswith("*")]  # no escalation


def _create_stack(cfn, name: str, template: Path, params: dict[str, str]) -> dict[str, str]:
    """Create a stack from ``template`` in moto; its outputs (it must have completed)."""
    cfn.create_stack(
        StackName=name,
        TemplateBody=template.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    )
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def _doc(document):
    """A policy document as moto returns it: a dict, JSON, or (made by CloudFormation) Python's repr."""
    if isinstance(document, dict):
        return document
    try:
        return json.loads(document)
    except json.JSONDecodeError:
        import ast

        return ast.literal_eval(document)


def test_work_pools_are_created_once_and_bad_values_write_nothing(cloud):
    env = cloud["env"]
    bad = _script("deployments.work_pools", "--from-stack", STACK, "--cpu", "300", env=env)
    assert bad.returncode == 2 and "cpu: 300 is not one of" in bad.stderr
    missing = _script("deployments.work_pools", "--from-stack", "no-such-stack", env=env)
    assert missing.returncode == 2 and "'no-such-stack' not found" in missing.stderr

    start = time.perf_counter()
    first = _script("deployments.work_pools", "--from-stack", STACK, env=env)
    print(f"\nwork_pools: {time.perf_counter() - start:.1f} s\n{first.stdout}")
    assert first.returncode == 0, first.stderr
    assert "work pool driftloop-ecs: created" in first.stdout
    second = _script("deployments.work_pools", "--from-stack", STACK, env=env)
    assert second.returncode == 0 and second.stdout.count(": unchanged") == 3, (
        second.stdout
    )  # local, docker, ecs

    pool = _api(lambda client: client.read_work_pool("driftloop-ecs"))
    defaults = {k: v.get("default") for k, v in pool.base_job_template["variables"]["properties"].items()}
    assert pool.type == "ecs" and defaults["cluster"] == "driftloop"
    assert defaults["task_role_arn"] == cloud["outputs"]["FlowTaskRoleArn"]
    assert defaults["network_configuration"]["subnets"] == cloud["subnets"]  # the worker wraps it
    assert defaults["prefect_api_key_secret_arn"].startswith("arn:aws:secretsmanager:")

    # a pool of the wrong type under a pool's name is named, not overwritten
    from deployments.aws import SetupError
    from deployments.work_pools import apply_pools, desired_pools

    (ecs_spec,) = desired_pools(only="cloud")
    with pytest.raises(SetupError, match="'driftloop-local' exists with type 'process', not 'ecs'"):
        asyncio.run(apply_pools([{**ecs_spec, "name": "driftloop-local"}]))


def test_preflight_names_every_missing_piece_and_nothing_deploys(cloud):
    env = {k: v for k, v in cloud["env"].items() if k not in ("DRIFTLOOP_IMAGE", "DRIFTLOOP_STORE_URI")}
    out = _script("deployments.cloud", "deploy", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    for expected in (
        "$DRIFTLOOP_IMAGE is not set",
        "$DRIFTLOOP_STORE_URI is not set",
        "block aws-credentials/driftloop-aws does not exist",
        "block secret/driftloop-wandb-api-key does not exist",
    ):
        assert expected in out.stderr
    assert "Deploying" not in out.stdout

    assert [
        d for d in _api(lambda client: client.read_deployments()) if d.work_pool_name == "driftloop-ecs"
    ] == []


def test_blocks_are_made_once_from_env_and_a_missing_key_is_refused(cloud):
    env = {
        **cloud["env"],
        "AWS_ACCESS_KEY_ID": "sentinel-access-key-id",
        "AWS_SECRET_ACCESS_KEY": SENTINEL_AWS_SECRET,
        "DRIFTLOOP_TEST_WANDB_KEY": SENTINEL_WANDB_KEY,
    }
    args = ["--from-stack", STACK, "--endpoint-url", cloud["endpoint"], "--keys-from-env"]
    refused = _script("deployments.blocks", *args, "--wandb-api-key-env", "UNSET_WANDB_VAR", env=env)
    assert refused.returncode == 2 and "$UNSET_WANDB_VAR is not set" in refused.stderr
    first = _script("deployments.blocks", *args, "--wandb-api-key-env", "DRIFTLOOP_TEST_WANDB_KEY", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": created") == 3, first.stdout
    second = _script("deployments.blocks", *args, "--wandb-api-key-env", "DRIFTLOOP_TEST_WANDB_KEY", env=env)
    assert second.stdout.count(": unchanged") == 3, second.stdout
    printed = first.stdout + first.stderr + second.stdout + second.stderr
    assert SENTINEL_AWS_SECRET not in printed and SENTINEL_WANDB_KEY not in printed


def test_preflight_refuses_a_missing_image_and_an_empty_secret_then_deploys(cloud):
    out = cloud["outputs"]
    image = f"{out['FlowsRepositoryUri']}:0123abc"
    env = {**cloud["env"], "DRIFTLOOP_IMAGE": image, "DRIFTLOOP_STORE_URI": out["StoreUri"]}
    refused = _script("deployments.cloud", "check", env=env)
    assert refused.returncode == 2
    assert f"image {image} does not exist" in refused.stderr
    assert f"secret {out['PrefectApiKeySecretName']!r} has no value yet" in refused.stderr

    ecr = _aws("ecr", cloud["endpoint"])  # what CI's `docker push` does
    ecr.put_image(
        repositoryName="driftloop/flows",
        imageTag="0123abc",
        imageManifest=json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "digest": "sha256:" + "a" * 64,
                    "size": 1,
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                },
                "layers": [],
            }
        ),
    )
    _aws("secretsmanager", cloud["endpoint"]).put_secret_value(
        SecretId=out["PrefectApiKeySecretName"], SecretString="pnu_sentinel"
    )
    ready = _script("deployments.cloud", "check", env=env)
    assert ready.returncode == 0 and "ready to deploy" in ready.stdout, ready.stderr

    start = time.perf_counter()
    deployed = _script("deployments.cloud", "deploy", env=env)
    n = len(prefect_file.deployments("cloud"))
    print(f"\ndeploy */cloud ({n} deployments): {time.perf_counter() - start:.1f} s")
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]

    cloud_deployments = [
        d for d in _api(lambda client: client.read_deployments()) if d.work_pool_name == "driftloop-ecs"
    ]
    training = _api(lambda client: client.read_deployment_by_name("training/cloud"))
    flows = {prefect_file.flow_name(d) for d in prefect_file.deployments("local")}
    assert len(cloud_deployments) == n == len(flows) >= 12  # one per flow
    assert training.job_variables["image"] == image
    assert training.job_variables["env"]["DRIFTLOOP_STORE_URI"] == out["StoreUri"]
    assert (
        training.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]
        == "/opt/driftloop"
    )

    # both targets at once, as `prefect deploy --all` does once both pools exist
    start = time.perf_counter()
    everything = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--all"],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(f"prefect deploy --all ({2 * n} deployments): {time.perf_counter() - start:.1f} s")
    assert everything.returncode == 0, everything.stdout[-2000:]


def _recorded(endpoint: str, action: str) -> list[dict]:
    """The bodies of the ECS ``action`` requests the moto server recorded (JSON 1.1 protocol)."""
    import base64

    from tests.conftest import MOTO_RECORDING

    bodies = []
    for line in MOTO_RECORDING.read_text().splitlines():
        entry = json.loads(line)
        target = {k.lower(): v for k, v in entry["headers"].items()}.get("x-amz-target", "")
        if target.endswith(f".{action}"):
            body = base64.b64decode(entry["body"]) if entry["body_encoded"] else entry["body"]
            bodies.append(json.loads(body))
    return bodies


def test_the_real_ecs_worker_launches_a_cloud_flow_run_with_the_stacks_network_roles_and_secret(cloud):
    """prefect-aws's own ECS worker, on the pool the setup scripts made, submits a training/cloud run
    to ECS (moto): the RunTask and RegisterTaskDefinition requests it sends are what is checked (moto
    runs no container). A wrongly shaped pool value fails here, as it would on AWS."""
    import httpx
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    out, endpoint = cloud["outputs"], cloud["endpoint"]
    deployment = _api(lambda client: client.read_deployment_by_name("training/cloud"))
    run = _api(lambda client: client.create_flow_run_from_deployment(deployment.id))
    httpx.post(f"{endpoint}/moto-api/recorder/reset-recording")
    httpx.post(f"{endpoint}/moto-api/recorder/start-recording")
    env = {
        **cloud["env"],  # AWS_ENDPOINT_URL: the worker's boto3 clients reach moto, as the task role would AWS
        "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME": out["TaskEventsQueueName"],
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        # as on ECS, where the worker's own key comes from the secret (prefect-aws expects it in its env
        # and hands flow runs the secret instead); the test server ignores it
        "PREFECT_API_KEY": "pnu_sentinel",
    }
    try:
        worker = subprocess.run(
            [
                str(Path(sys.executable).parent / "prefect"),
                "worker",
                "start",
                "--pool",
                "driftloop-ecs",
                "--type",
                "ecs",
                "--run-once",
            ],
            env=env,
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        httpx.post(f"{endpoint}/moto-api/recorder/stop-recording")
    log = worker.stdout[-3000:] + worker.stderr[-3000:]
    runs, definitions = _recorded(endpoint, "RunTask"), _recorded(endpoint, "RegisterTaskDefinition")
    # moto 5.2 answers this RunTask with a 500 (its resource accounting needs container-level memory;
    # ECS takes task-level memory), so the worker retries: every request it sent is checked
    assert runs and definitions, log
    ecs_model = get_session().get_service_model("ecs")
    for operation, bodies in (("RunTask", runs), ("RegisterTaskDefinition", definitions)):
        for params in bodies:
            report = ParamValidator().validate(params, ecs_model.operation_model(operation).input_shape)
            assert not report.has_errors(), f"{operation}: {report.generate_report()}"

    launched = set()
    for request in runs:
        network = request["networkConfiguration"]["awsvpcConfiguration"]
        assert network["subnets"] == cloud["subnets"]
        assert network["securityGroups"] == [out["TasksSecurityGroupId"]]
        assert network["assignPublicIp"] == out["AssignPublicIp"]
        assert request["cluster"] == out["ClusterName"] and request["launchType"] == "FARGATE"
        assert request["overrides"]["taskRoleArn"] == out["FlowTaskRoleArn"]
        environment = request["overrides"]["containerOverrides"][0]["environment"]
        overrides = {e["name"]: e["value"] for e in environment}
        launched.add(overrides["PREFECT__FLOW_RUN_ID"])
        assert overrides["DRIFTLOOP_STORE_URI"] == out["StoreUri"]
        assert "PREFECT_API_KEY" not in overrides
    # this run was launched; any other is a run of the same pool that fell due meanwhile (the hourly
    # cloud deployments' schedules), launched the same way and checked above
    assert str(run.id) in launched, launched
    for other in launched - {str(run.id)}:
        scheduled = _api(lambda client: client.read_flow_run(UUID(other)))
        assert scheduled.work_pool_name == "driftloop-ecs", scheduled

    for definition in definitions:
        (container,) = definition["containerDefinitions"]
        assert container["image"] == deployment.job_variables["image"]
        assert definition["executionRoleArn"] == out["TaskExecutionRoleArn"]
        assert definition["runtimePlatform"] == {
            "cpuArchitecture": "X86_64",
            "operatingSystemFamily": "LINUX",
        }
        secrets = {s["name"]: s["valueFrom"] for s in container.get("secrets", [])}
        assert secrets["PREFECT_API_KEY"].startswith("arn:aws:secretsmanager:")  # a secret, never a value
        assert "PREFECT_API_KEY" not in {e["name"] for e in container.get("environment", [])}
    assert "pnu_sentinel" not in json.dumps([runs, definitions])

    _api(lambda client: client.delete_flow_run(run.id))  # nothing will run it: moto starts no container


def test_training_runs_with_the_cloud_settings_against_the_stacks_bucket_and_leaks_no_secret(cloud, tmp_path):
    """The training/cloud deployment's own env (prefect.yaml), credentials only from blocks."""
    out = cloud["outputs"]
    (training,) = [d for d in prefect_file.deployments("cloud") if d["entrypoint"].endswith(":training")]
    job_env = prefect_file.render(
        training["work_pool"]["job_variables"]["env"], {"DRIFTLOOP_STORE_URI": out["StoreUri"]}
    )
    env = {
        k: v
        for k, v in cloud["env"].items()
        if not k.startswith(("AWS_", "DRIFTLOOP_", "WANDB_")) and k != "BENTOML_HOME"
    }
    env.update(job_env)
    env.update(
        {  # what differs from an ECS task here: no internet for W&B, private dirs
            "DRIFTLOOP_TRACKING__MODE": "offline",
            "DRIFTLOOP_TRACKING__DIR": str(tmp_path / "wandb"),
            "DRIFTLOOP_BENTOML_HOME": str(tmp_path / "bentoml"),
            "DRIFTLOOP_PREFECT__HOME": os.environ["DRIFTLOOP_PREFECT__HOME"],
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
    )
    assert "AWS_SECRET_ACCESS_KEY" not in env and "AWS_ENDPOINT_URL" not in env  # the blocks must carry both
    # two processes with separate disks, as two ECS tasks: landing, then training
    land_script = (
        "from flows.land import LandParams, land_demo_data\n"
        "state = land_demo_data(LandParams(months=[1, 2]), return_state=True)\n"
        "print('RUN', state.state_details.flow_run_id)\n"
    )
    train_script = (
        "import json\n"
        "from flows.schemas import TrainingParams\n"
        "from flows.training import training\n"
        f"SMALL = {SMALL!r}\n"
        "state = training(TrainingParams(**SMALL), return_state=True)\n"
        "summary = state.result()\n"
        "print('RUN', state.state_details.flow_run_id)\n"
        "print('RESULT', json.dumps({'version': summary.version, 'registry': summary.registry_entry}))\n"
    )
    start = time.perf_counter()
    outputs = []
    for i, script in enumerate((land_script, train_script)):
        run_env = {**env, "DRIFTLOOP_SOURCES_DIR": str(tmp_path / f"disk-{i}")}
        run = subprocess.run(
            [sys.executable, "-c", script],
            env=run_env,
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        outputs.append(run.stdout + run.stderr)
    print(
        "\nland, then train, with the cloud settings on the stack's bucket: "
        f"{time.perf_counter() - start:.1f} s"
    )
    result = json.loads(outputs[1].split("RESULT ", 1)[1].splitlines()[0])
    run_ids = [UUID(o.split("RUN ", 1)[1].split()[0]) for o in outputs]
    assert result["version"] == 1 and result["registry"].startswith(out["StoreUri"])
    assert not (tmp_path / "disk-1").exists() or not any(
        (tmp_path / "disk-1").iterdir()
    )  # training needed no local source

    s3 = _aws("s3", cloud["endpoint"])
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=out["BucketName"])
        for o in page.get("Contents", [])
    ]
    assert keys and all(k.startswith("driftloop/") for k in keys), "a flow wrote outside the store prefix"
    assert any(k.startswith("driftloop/prefect-results/") for k in keys)  # task results in the S3Bucket block
    assert any(k.startswith("driftloop/registry/") for k in keys)

    # no secret anywhere a run leaves traces: output, logs, artifacts, W&B files, stored objects
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    logs = [
        entry.message
        for entry in _api(
            lambda client: client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)), limit=200
            )
        )
    ]
    artifacts = [
        json.dumps(a.model_dump(mode="json"))
        for a in _api(
            lambda client: client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
            )
        )
    ]
    assert logs and artifacts
    haystacks = {
        "stdout/stderr": "\n".join(outputs),
        "logs": "\n".join(logs),
        "artifacts": "\n".join(artifacts),
    }
    haystacks["wandb files"] = "\n".join(
        p.read_bytes().decode("latin-1") for p in (tmp_path / "wandb").rglob("*") if p.is_file()
    )
    assert haystacks["wandb files"]
    haystacks["stored objects"] = "\n".join(
        s3.get_object(Bucket=out["BucketName"], Key=k)["Body"].read().decode("latin-1")
        for k in keys
        if not k.endswith(".parquet")
    )
    for where, text in haystacks.items():
        for secret in (SENTINEL_AWS_SECRET, SENTINEL_WANDB_KEY):
            assert secret not in text, f"a secret leaked into {where}"
