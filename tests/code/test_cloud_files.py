"""The cloud deployment's files, checked offline: CloudFormation (cfn-lint), the flow image's
Dockerfile (hadolint) and lock, the GitHub workflows (GitHub's schema), the ECS job template, and the
observability configuration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from tasks.core.settings import PROJECT_DIR

BIN = Path(sys.executable).parent
TEMPLATE = PROJECT_DIR / "infra" / "cloudformation" / "driftloop.yaml"
DEPLOY_TEMPLATE = PROJECT_DIR / "infra" / "cloudformation" / "github-deploy.yaml"
DOCKERFILE = PROJECT_DIR / "infra" / "docker" / "flows.Dockerfile"
WORKFLOWS = sorted((PROJECT_DIR / ".github" / "workflows").glob("*.yml"))


def _run(*args: str | Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=PROJECT_DIR)
    return out, time.perf_counter() - start


@pytest.mark.parametrize(
    "linter, path",
    [("cfn-lint", TEMPLATE), ("cfn-lint", DEPLOY_TEMPLATE), ("hadolint", DOCKERFILE)],
    ids=["cfn-lint", "cfn-lint-deploy", "hadolint"],
)
def test_infra_file_passes_its_linter(linter, path):
    out, seconds = _run(BIN / linter, path)
    print(f"{linter}: {seconds:.2f} s")
    assert out.returncode == 0, out.stdout + out.stderr


def test_cfn_lint_would_catch_a_broken_template(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("Type: AWS::ECS::Cluster", "Type: AWS::ECS::Clustre"))
    out, _ = _run(BIN / "cfn-lint", broken)
    assert out.returncode != 0 and "Clustre" in out.stdout


def _template() -> dict:
    from cfnlint.decode import decode_str

    template, _ = decode_str(TEMPLATE.read_text())
    return template


def test_bucket_is_private_encrypted_versioned_and_expires_the_logs_the_code_writes():
    from tasks.core.logs import FEEDBACK, PREDICTIONS, log_prefix

    template = _template()
    bucket = template["Resources"]["ArtifactBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    expiring = {
        r["Prefix"]["Fn::Sub"]: r
        for r in bucket["LifecycleConfiguration"]["Rules"]
        if "ExpirationInDays" in r and isinstance(r.get("Prefix"), dict)
    }
    # the prefixes the service writes its logs under, taken from the code (a model's log sits below)
    for kind in (PREDICTIONS, FEEDBACK):
        prefix = log_prefix(kind, "any-model").rsplit("/", 1)[0]
        rule = expiring.get("${StorePrefix}/" + prefix + "/")
        assert rule and rule["ExpirationInDays"] == {"Ref": "PredictionLogRetentionDays"}, (kind, expiring)
    # S3 expires what the compaction flow keeps: the same number of days by default
    from tasks.core.settings import LogSettings

    days = template["Parameters"]["PredictionLogRetentionDays"]["Default"]
    assert days == LogSettings().retention_days


def test_the_flow_role_reads_and_writes_only_the_store_prefix_and_gets_404_for_missing_keys():
    statements = _template()["Resources"]["FlowTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    actions = {
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    (listing,) = [s for s in statements if s["Action"] == "s3:ListBucket"]
    # S3 answers a missing key with 404 only to a caller that may list the bucket, checked without a
    # prefix in the context: a prefix condition here turns "not there yet" into 403 (an error)
    assert "Condition" not in listing
    (objects,) = [s for s in statements if s is not listing]
    assert "${Bucket}/${StorePrefix}/*" in json.dumps(objects["Resource"])


def test_a_flow_runs_dask_cluster_stays_in_the_stacks_cluster_roles_and_network():
    resources = _template()["Resources"]
    (dask,) = [
        p
        for p in resources["FlowTaskRole"]["Properties"]["Policies"]
        if p["PolicyName"] == "dask-cluster-for-a-flow-run"
    ]
    statements = {s["Sid"]: s for s in dask["PolicyDocument"]["Statement"]}
    assert statements["DaskTasksInThisClusterOnly"]["Condition"] == {
        "ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}
    }
    passed = json.dumps(statements["PassOnlyTheDaskRoles"]["Resource"])
    assert "-dask-task" in passed and "-task-execution" in passed and "*" not in passed
    assert "-flow-task" not in passed  # the workers never get the role that may stop the service's tasks
    dask_role = resources["DaskTaskRole"]["Properties"]
    assert dask_role["RoleName"] == {"Fn::Sub": "${ProjectName}-dask-task"}
    (store_only,) = dask_role["Policies"]
    actions = {a for st in store_only["PolicyDocument"]["Statement"] for a in _listed(st["Action"])}
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    # nothing reaches the scheduler or workers but each other and the flow-run tasks
    ingress = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    into_dask = [r for r in ingress if r["GroupId"] == {"Ref": "DaskSecurityGroup"}]
    assert {json.dumps(r["SourceSecurityGroupId"]) for r in into_dask} == {
        json.dumps({"Ref": "DaskSecurityGroup"}),
        json.dumps({"Ref": "TasksSecurityGroup"}),
    }
    assert "SecurityGroupIngress" not in resources["DaskSecurityGroup"]["Properties"]
    outputs = _template()["Outputs"]
    assert {
        "ClusterArn",
        "DaskSecurityGroupId",
        "DaskLogGroupName",
        "DaskTaskRoleArn",
        "TaskExecutionRoleArn",
    } <= set(outputs)


def _service_containers(resources: dict) -> list[dict]:
    """The service container in both of the task definition's lists (with the collector, without)."""
    _, with_metrics, without = resources["ServiceTaskDefinition"]["Properties"]["ContainerDefinitions"][
        "Fn::If"
    ]
    services = [c for c in [*with_metrics, *without] if c["Name"] == "service"]
    assert len(services) == 2
    return services


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def test_https_service_url_is_the_certificates_name_and_the_stack_refuses_plain_http_to_the_internet():
    template = _template()
    url = template["Outputs"]["ServiceUrl"]["Value"]["Fn::If"]
    assert url[0] == "HasCertificate" and url[1] == {"Fn::Sub": "https://${ServiceDomainName}"}
    rules = template["Rules"]
    (tls,) = rules["TlsNeedsItsDomainName"]["Assertions"]
    assert tls["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ServiceDomainName"}, ""]}]}
    plain = rules["NoPlainHttpToTheInternet"]
    assert {"Fn::Equals": [{"Ref": "AllowedIngressCidr"}, "0.0.0.0/0"]} in plain["RuleCondition"]["Fn::And"]
    assert plain["Assertions"][0]["Assert"] == {"Fn::Equals": [{"Ref": "AllowPlainHttp"}, "true"]}
    assert template["Parameters"]["AllowPlainHttp"]["Default"] == "false"


def test_the_load_balancer_can_sit_in_public_subnets_and_the_service_waits_for_every_listener():
    resources = _template()["Resources"]
    subnets = resources["LoadBalancer"]["Properties"]["Subnets"]["Fn::If"]
    assert subnets == ["HasLoadBalancerSubnets", {"Ref": "LoadBalancerSubnetIds"}, {"Ref": "SubnetIds"}]
    assert resources["PredictionService"]["DependsOn"] == "ListenersReady"
    ready = resources["ListenersReady"]["Metadata"]
    assert ready["Https"] == {"Fn::If": ["HasCertificate", {"Ref": "HttpsListener"}, ""]}


def test_metrics_and_api_documents_are_not_served_through_the_load_balancer():
    from bentos.endpoints import ENDPOINTS

    rule = _template()["Resources"]["PrivatePathsRule"]["Properties"]
    paths = set(rule["Conditions"][0]["PathPatternConfig"]["Values"])
    assert {"/metrics", "/docs", "/docs.json"} <= paths
    assert paths - {"/metrics/*"} <= {e.path for e in ENDPOINTS}  # the service's own paths
    assert rule["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    assert rule["ListenerArn"] == {
        "Fn::If": ["HasCertificate", {"Ref": "HttpsListener"}, {"Ref": "HttpListener"}]
    }


def test_the_load_balancer_closes_idle_connections_before_the_service_does():
    resources = _template()["Resources"]
    attributes = {
        a["Key"]: a["Value"] for a in resources["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]
    }
    for service in _service_containers(resources):
        command = service["Command"]
        keep_alive = int(command[command.index("--timeout-keep-alive") + 1])
        assert keep_alive > int(attributes["idle_timeout.timeout_seconds"])


def test_image_tags_are_immutable_and_the_deploy_never_pushes_a_tag_twice():
    resources = _template()["Resources"]
    for repo in ("FlowsRepository", "ServiceRepository"):
        assert resources[repo]["Properties"]["ImageTagMutability"] == "IMMUTABLE"
    deploy = (PROJECT_DIR / ".github" / "workflows" / "deploy.yml").read_text()
    assert deploy.count("docker push") == deploy.count("aws ecr describe-images") == 2


def test_flow_tasks_reach_a_sql_source_only_when_one_is_given():
    resources = _template()["Resources"]
    egress = resources["TasksToSourceDatabase"]
    assert egress["Condition"] == "HasSqlSource"
    assert egress["Properties"]["CidrIp"] == {"Ref": "SourceDatabaseCidr"}
    assert egress["Properties"]["FromPort"] == egress["Properties"]["ToPort"] == {"Ref": "SourceDatabasePort"}


# what FargateCluster runs only for resources it is not given (the stack gives them all: cluster, roles,
# security groups, log group; ``cluster_options``), or for the account-wide sweep ``skip_cleanup`` skips
ONLY_WITHOUT_OUR_RESOURCES = {
    "_cleanup_stale_resources",
    "_create_cluster",
    "_delete_cluster",
    "_create_execution_role",
    "_create_task_role",
    "_delete_role",
    "_create_cloudwatch_logs_group",
    "_create_security_groups",
    "_delete_security_groups",
}


def _aws_calls_of(module_path: Path, skip: set[str]) -> dict[str, set[str]]:
    """The IAM actions a library's code calls (``await ecs.run_task(...)``, ``get_paginator("list_tasks")``),
    by function, read from its source: the service client's variable names the service."""
    import ast

    def action(service: str, method: str) -> str:
        return f"{service}:{''.join(w.title() for w in method.split('_'))}"

    found: dict[str, set[str]] = {}
    for fn in ast.walk(ast.parse(module_path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name in skip:
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                client = getattr(node.func.value, "id", None)
                if client in ("ecs", "ec2", "logs", "iam"):
                    if node.func.attr == "get_paginator" and node.args:
                        found.setdefault(fn.name, set()).add(action(client, node.args[0].value))
                    elif not node.func.attr.startswith("_") and node.func.attr != "meta":
                        found.setdefault(fn.name, set()).add(action(client, node.func.attr))
    return found


def test_the_flow_role_allows_every_call_dask_cloudprovider_makes_with_the_stacks_resources():
    """Read from dask-cloudprovider's own code: every AWS call a FargateCluster makes when it is given the
    stack's cluster, roles, security groups and log group (and skips its account-wide cleanup, which
    would call list APIs across the account) is allowed by the flow role's Dask policy."""
    import dask_cloudprovider.aws.ecs as ecs_module

    from flows.steps.engine import cluster_options
    from tasks.core.settings import DaskSettings

    fargate = {
        "image": "i",
        "cluster_arn": "arn:c",
        "execution_role_arn": "arn:e",
        "task_role_arn": "arn:t",
        "subnets": ["s"],
        "security_groups": ["g"],
        "cloudwatch_logs_group": "l",
    }
    options = cluster_options(DaskSettings(cluster="fargate", fargate=fargate))
    assert options["cluster_kwargs"]["skip_cleanup"] is True
    calls = _aws_calls_of(Path(ecs_module.__file__), ONLY_WITHOUT_OUR_RESOURCES)
    needed = set().union(*calls.values())
    assert {"ecs:RunTask", "ecs:ListAccountSettings", "ecs:RegisterTaskDefinition"} <= needed  # it reads
    (dask,) = [
        p
        for p in _template()["Resources"]["FlowTaskRole"]["Properties"]["Policies"]
        if p["PolicyName"] == "dask-cluster-for-a-flow-run"
    ]
    allowed = set()
    for statement in dask["PolicyDocument"]["Statement"]:
        actions = statement["Action"]
        allowed |= {actions} if isinstance(actions, str) else set(actions)
    missing = {a: sorted(f for f, c in calls.items() if a in c) for a in sorted(needed - allowed)}
    assert missing == {}


def test_the_services_region_reaches_the_store(monkeypatch):
    from tasks.core.settings import Settings

    resources = _template()["Resources"]
    for service in _service_containers(resources):
        names = {e["Name"] for e in service["Environment"]}
        assert "DRIFTLOOP_S3__REGION" in names, "the store reads DRIFTLOOP_S3__REGION, not AWS_REGION"
    monkeypatch.setenv("DRIFTLOOP_S3__REGION", "eu-west-3")
    assert Settings().s3.region == "eu-west-3"  # the name the template sets is the setting's


def test_every_workflow_job_outlasts_the_waits_its_steps_may_take():
    """A job killed by its own timeout while a ``--watch`` still waits reports nothing useful."""
    for path in WORKFLOWS:
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            waits = sum(
                int(seconds)
                for step in job.get("steps", [])
                for seconds in re.findall(r"--watch-timeout (\d+)", step.get("run", ""))
            )
            assert waits / 60 < job.get("timeout-minutes", 360), f"{path.name} job {name}: waits {waits} s"


def test_templates_fit_cloudformations_limits_and_the_big_one_is_always_sent_through_a_bucket():
    """`aws cloudformation deploy --template-file` sends a body inline up to 51,200 bytes; with
    `--s3-bucket` it uploads it first (up to 1 MB). The deploy template stays inline (it is created
    before any bucket of the stack's); the main one is deployed through a bucket wherever it is."""
    assert len(DEPLOY_TEMPLATE.read_bytes()) < 51_200 - 2_000, "move a part into its own stack"
    assert len(TEMPLATE.read_bytes()) < 1_000_000 - 50_000
    for doc in [*WORKFLOWS, PROJECT_DIR / "README.md"]:
        for command in re.findall(r"aws cloudformation deploy.*", doc.read_text().replace("\\\n", " ")):
            if "driftloop.yaml" in command:
                assert "--s3-bucket" in command, f"{doc.name}: {command[:120]}"


def test_the_service_runs_behind_the_load_balancer_scales_and_rolls_safely():
    resources = _template()["Resources"]
    service = resources["PredictionService"]["Properties"]
    (lb,) = service["LoadBalancers"]
    assert lb == {
        "ContainerName": "service",
        "ContainerPort": 3000,
        "TargetGroupArn": {"Ref": "ServiceTargetGroup"},
    }
    deployment = service["DeploymentConfiguration"]
    assert deployment["MinimumHealthyPercent"] == 100 and deployment["DeploymentCircuitBreaker"]["Rollback"]
    assert resources["ServiceTargetGroup"]["Properties"]["HealthCheckPath"] == "/readyz"
    task = resources["ServiceTaskDefinition"]["Properties"]
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["ServiceTaskRole", "Arn"]}
    assert resources["ServiceLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    https = resources["HttpsListener"]
    assert https["Condition"] == "ServiceWithTls" and https["Properties"]["Protocol"] == "HTTPS"
    http_action = resources["HttpListener"]["Properties"]["DefaultActions"][0]["Fn::If"]
    assert http_action[0] == "HasCertificate" and http_action[1]["Type"] == "redirect"  # HTTP -> HTTPS
    metrics = {
        r["Properties"]["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"
        ]
        for r in resources.values()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    }
    assert metrics == {"ALBRequestCountPerTarget", "ECSServiceAverageCPUUtilization"}


def test_the_services_metrics_are_scraped_into_the_managed_prometheus_workspace():
    """The collector beside the service scrapes the port and path the service exports its metrics on."""
    task = _template()["Resources"]["ServiceTaskDefinition"]["Properties"]
    condition, with_metrics, without = task["ContainerDefinitions"]["Fn::If"]
    assert condition == "ServiceMetrics" and [c["Name"] for c in without] == ["service"]
    service, collector = with_metrics
    assert service == without[0]  # the same service container either way
    (port,) = service["PortMappings"]
    (config_env,) = collector["Environment"]
    config = yaml.safe_load(config_env["Value"]["Fn::Sub"])
    (job,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{port['ContainerPort']}"]
    assert job["metrics_path"] == "/metrics"
    writer = config["exporters"]["prometheusremotewrite"]
    assert writer["endpoint"] == "${MetricsWorkspace.PrometheusEndpoint}api/v1/remote_write"
    assert writer["auth"]["authenticator"] == "sigv4auth"


def test_a_new_stack_never_collides_with_a_retained_bucket_and_can_reuse_it():
    template = _template()
    bucket = template["Resources"]["ArtifactBucket"]
    assert bucket["DeletionPolicy"] == "Retain" and "BucketName" not in bucket["Properties"]  # generated
    assert bucket["Condition"] == "CreateBucket"
    assert template["Conditions"]["CreateBucket"] == {"Fn::Equals": [{"Ref": "ExistingBucketName"}, ""]}


def test_alarms_can_notify_and_a_parked_worker_raises_none():
    template = _template()
    resources = template["Resources"]
    key_ref = resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"]
    assert key_ref == {"Ref": "AlarmTopicKey"}  # not alias/aws/sns: CloudWatch cannot use that key
    statements = resources["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(cloudwatch[0]["Action"])
    assert template["Parameters"]["WorkerDesiredCount"]["Default"] == 0  # no image yet on a new stack
    assert resources["WorkerNotRunningAlarm"]["Condition"] == "WorkerRunning"
    assert template["Conditions"]["WorkerRunning"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WorkerDesiredCount"}, 0]}]
    }


def test_every_task_runs_on_the_platform_the_images_are_built_for():
    from deployments.work_pools import ecs_template

    worker = _template()["Resources"]["WorkerTaskDefinition"]["Properties"]
    assert worker["RuntimePlatform"] == {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}
    flow_runs = ecs_template()["job_configuration"]["task_definition"]
    assert flow_runs["runtimePlatform"] == {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"}
    deploy = (PROJECT_DIR / ".github/workflows/deploy.yml").read_text()
    assert "docker build --platform linux/amd64" in deploy and "--opt platform=linux/amd64" in deploy
    assert "--platform linux/amd64" in (PROJECT_DIR / "Makefile").read_text()


def test_hadolint_would_catch_a_root_image(tmp_path):
    worse = tmp_path / "Dockerfile"
    worse.write_text(
        DOCKERFILE.read_text()
        .replace("USER 10001:10001", "")
        .replace("FROM ${BASE_IMAGE}", "FROM python:latest")
    )
    out, _ = _run(BIN / "hadolint", worse)
    assert out.returncode != 0 and "DL3007" in out.stdout  # "latest" is not a pinned base image
    # the base is a build argument (a local base where no registry is reachable): its default is pinned
    assert re.search(r"^ARG BASE_IMAGE=python:\d+\.\d+\.\d+-slim-bookworm$", DOCKERFILE.read_text(), re.M)


def test_flow_image_runs_as_non_root_with_the_project_and_no_secrets():
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER 10001", text, re.M)
    packages = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
    ignored = {line.strip().rstrip("/") for line in (PROJECT_DIR / ".dockerignore").read_text().splitlines()}
    assert re.search(r"^COPY \. \./$", text, re.M) and "requirements.lock" in text  # the build context, whole
    for package in [
        *(p.rstrip("*") for p in packages),
        "configs",
        "infra/docker/bin",
        "README.md",
        "prefect.yaml",
    ]:
        assert package not in ignored, f"the flow image would lack {package} (.dockerignore)"
    assert {".venv", ".driftloop", ".env", "*.pem", "tests"} <= ignored
    assert not re.search(r"(?i)(api_key|secret|password|token)\s*=", text)
    ignored = (PROJECT_DIR / ".dockerignore").read_text().split()
    assert {".venv", ".driftloop", ".git", ".env"} <= set(ignored)


LOCKS = {
    "dev": PROJECT_DIR / "requirements-dev.lock",  # the development venv (make venv)
    "flows": PROJECT_DIR / "requirements.lock",  # the flow image
    "serving": PROJECT_DIR / "bentos" / "requirements.lock",  # every bento
}


def locked(path: Path) -> dict[str, tuple[str, list[str], object]]:
    """A ``uv pip compile --generate-hashes`` file: name -> (version, hashes, marker or None)."""
    from packaging.requirements import Requirement

    pins: dict[str, tuple[str, list[str], object]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        if entry.startswith("#"):
            continue
        requirement, *options = entry.split("\\\n")
        req = Requirement(requirement.strip())
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)
        (version,) = [s.version for s in req.specifier if s.operator == "=="]
        pins[re.sub(r"[-_.]+", "-", req.name).lower()] = (version, hashes, req.marker)
    return pins


def test_lock_satisfies_every_runtime_dependency():
    from packaging.requirements import Requirement

    pins = locked(LOCKS["flows"])
    deps = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        name = re.sub(r"[-_.]+", "-", dep.name).lower()
        assert name in pins, f"{name} is a dependency but not in requirements.lock; run `make lock`"
        assert dep.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name][0]}, outside {dep}; run `make lock`"
        )


def test_one_set_of_versions_everywhere_each_with_its_hashes():
    """The flow image and every bento install versions the development venv was tested with, and pip /
    uv refuse a download whose hash differs."""
    dev = locked(LOCKS["dev"])
    assert len(dev) > 100
    for kind, path in LOCKS.items():
        pins = locked(path)
        assert pins and all(hashes for _, hashes, _ in pins.values()), f"{path.name}: a pin without hashes"
        differ = {n: (v, dev[n][0]) for n, (v, _, _) in pins.items() if n not in dev or dev[n][0] != v}
        assert not differ, f"{kind} lock differs from requirements-dev.lock: {differ}; run `make lock`"


def test_the_development_venv_is_the_lock():
    """``make venv`` installs requirements-dev.lock: what is installed here is what it pins."""
    from importlib import metadata

    wrong = {}
    for name, (version, _, marker) in locked(LOCKS["dev"]).items():
        if marker is not None and not marker.evaluate({"extra": ""}):
            continue  # another platform's package
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs locked: {wrong}; run `make venv` (it reinstalls from the lock)"


def test_serving_lock_pins_what_the_service_needs():
    from tasks.registry.packaging import bentofile, serving_packages

    pins = locked(LOCKS["serving"])
    assert {re.sub(r"[-_.]+", "-", p).lower() for p in serving_packages()} <= set(pins)
    assert "prefect" not in pins and "wandb" not in pins  # a bento carries the service, not the flows
    python = bentofile("m", "m:v1", 1, "s")["python"]
    assert python == {"requirements_txt": "bentos/requirements.lock", "lock_packages": False}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_github_workflow_matches_githubs_schema(workflow):
    out, seconds = _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", workflow)
    print(f"check-jsonschema {workflow.name}: {seconds:.2f} s")
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflows_test_on_pull_requests_and_deploy_and_run_on_main():
    ci = yaml.safe_load((PROJECT_DIR / ".github/workflows/ci.yml").read_text())
    assert "pull_request" in ci[True]  # YAML reads the `on:` key as True
    assert any(step.get("run") == "make test" for step in ci["jobs"]["test"]["steps"])
    deploy_text = (PROJECT_DIR / ".github/workflows/deploy.yml").read_text()
    deploy = yaml.safe_load(deploy_text)
    assert deploy[True]["push"]["branches"] == ["main"]
    for needed in (
        "docker build --platform linux/amd64 -f infra/docker/flows.Dockerfile",
        "docker push",
        "deployments.work_pools",
        "deployments.blocks",
        "deployments.cloud deploy",
        "prefect deployment run 'training/cloud' --watch",
        "flows/package.py",
        "bentoml containerize",
    ):
        assert needed in deploy_text, f"deploy workflow lacks {needed!r}"
    order = list(deploy["jobs"])
    assert (
        order.index("test") < order.index("flow-image") < order.index("deploy") < order.index("service-image")
    )
    assert "AWS_SECRET_ACCESS_KEY" not in deploy_text  # OIDC role, no long-lived keys


def test_deploys_are_never_cancelled_by_a_test_run_of_the_same_push():
    ci = yaml.safe_load((PROJECT_DIR / ".github/workflows/ci.yml").read_text())
    deploy = yaml.safe_load((PROJECT_DIR / ".github/workflows/deploy.yml").read_text())
    # called from deploy.yml, ci.yml's group is evaluated with the caller's github.workflow ("deploy"),
    # so a push's own ci run and the deploy's test job are in different groups
    assert "github.workflow" in ci["concurrency"]["group"] and "github.ref" in ci["concurrency"]["group"]
    assert ci["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    assert deploy["concurrency"] == {"group": "deploy-main", "cancel-in-progress": False}
    assert deploy["jobs"]["test"]["uses"] == "./.github/workflows/ci.yml"


def test_each_deploy_rolls_the_worker_to_its_image_and_lands_data_before_training():
    text = (PROJECT_DIR / ".github/workflows/deploy.yml").read_text()
    deploy = yaml.safe_load(text)
    worker = "\n".join(step.get("run", "") for step in deploy["jobs"]["worker"]["steps"])
    assert 'WorkerImageTag="${GITHUB_SHA}"' in worker and "WorkerDesiredCount=1" in worker
    assert "aws ecs wait services-stable" in worker
    assert "worker" in deploy["jobs"]["deploy"]["needs"]  # flow runs start only on the rolled worker
    assert ":latest" not in text  # every image is the commit's
    run = "\n".join(step.get("run", "") for step in deploy["jobs"]["deploy"]["steps"])
    assert run.index("'land-demo-data/cloud' --watch") < run.index("'training/cloud' --watch")
    assert "driftloop/flows" not in text and "driftloop/service" not in text  # names from stack outputs
    assert "FlowsRepositoryUri" in text and "ServiceRepositoryUri" in text


def test_ecs_template_keeps_every_field_of_prefect_aws_default():
    """Derived from `prefect work-pool get-default-base-job-template --type ecs`: an upgrade of
    prefect-aws that adds a variable or job field shows up here."""
    from prefect_aws.workers.ecs_worker import ECSWorker

    from deployments.work_pools import ecs_template

    default = ECSWorker.get_default_base_job_template()
    ours = ecs_template()
    assert set(default["variables"]["properties"]) == set(ours["variables"]["properties"])
    assert set(default["job_configuration"]) == set(ours["job_configuration"])
    assert ours["variables"]["properties"]["cpu"]["default"] == 1024
    assert ours["variables"]["properties"]["cluster"]["default"] == "driftloop"


@pytest.mark.parametrize(
    "variables, complaint",
    [
        ({"cpu": 300}, r"cpu: 300 is not one of"),
        ({"cpu": 1024, "memory": 100}, r"memory: 100 is less than the minimum"),
        ({"cpu": 256, "memory": 4096}, r"4096 MiB is not a Fargate size for cpu 256"),
        ({"launch_type": "LAMBDA"}, r"launch_type: 'LAMBDA' is not one of"),
        ({"env": {"A": 3}}, r"env.A: 3 is not valid"),
    ],
)
def test_job_variables_out_of_range_are_named(variables, complaint):
    from deployments.aws import SetupError
    from deployments.work_pools import ecs_template, validate_job_variables

    with pytest.raises(SetupError, match=complaint):
        validate_job_variables(variables, ecs_template(), "training/cloud")
    validate_job_variables(
        {"cpu": 2048, "memory": 8192}, ecs_template(), "training/cloud"
    )  # a valid pair passes


def test_preflight_refuses_a_pool_whose_network_configuration_is_wrapped_twice():
    from deployments.cloud import network_configuration_problem

    inner = {"subnets": ["subnet-1"], "securityGroups": ["sg-1"], "assignPublicIp": "ENABLED"}
    assert network_configuration_problem(inner) is None
    assert "the worker wraps it" in network_configuration_problem({"awsvpcConfiguration": inner})
    assert network_configuration_problem({"subnets": []})  # no subnets: refused too
    # what work_pools writes from the stack's outputs is checked against the real worker in
    # tests/integration/test_cloud_deploy.py


def test_ecr_image_names_are_parsed():
    from deployments.aws import ECR_IMAGE, SetupError, check_image

    m = ECR_IMAGE.match("123456789012.dkr.ecr.eu-west-1.amazonaws.com/driftloop/flows:0a1b2c")
    assert m and m["repo"] == "driftloop/flows" and m["tag"] == "0a1b2c" and m["region"] == "eu-west-1"
    with pytest.raises(SetupError, match="DRIFTLOOP_IMAGE"):
        check_image("{{ $DRIFTLOOP_IMAGE }}")


def test_grafana_dashboard_and_prometheus_config_are_well_formed():
    dashboard = json.loads((PROJECT_DIR / "infra/observability/grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "driftloop-service" and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    titles = " ".join(p["title"] for p in dashboard["panels"])
    assert "model version and arm" in titles and "latency" in titles.lower() and "Requests" in titles
    prom = yaml.safe_load((PROJECT_DIR / "infra/observability/prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["127.0.0.1:3000"]
    rules = yaml.safe_load((PROJECT_DIR / "infra/observability" / prom["rule_files"][0]).read_text())
    assert all(r["expr"] and r["alert"] for g in rules["groups"] for r in g["rules"])


def dashboard_metric_names() -> set[str]:
    """Metric names the dashboard and alert rules query (the service must export each)."""
    texts = [
        (PROJECT_DIR / "infra/observability/grafana-dashboard.json").read_text(),
        (PROJECT_DIR / "infra/observability/driftloop-alerts.yml").read_text(),
    ]
    names = set()
    for text in texts:
        names |= set(re.findall(r"\b((?:bentoml_service|driftloop)_[a-z_]+)\b", text))
    return names


def test_an_alarm_fires_when_every_target_is_gone_and_on_the_load_balancers_own_5xx():
    resources = _template()["Resources"]
    alarms = {
        r["Properties"]["MetricName"]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    down = alarms["HealthyHostCount"]
    assert down["ComparisonOperator"] == "LessThanThreshold" and down["Threshold"] == 1
    assert down["TreatMissingData"] == "breaching"  # no target registered reports nothing
    assert {"HTTPCode_ELB_5XX_Count", "HTTPCode_Target_5XX_Count"} <= set(alarms)
    for alarm in (down, alarms["HTTPCode_ELB_5XX_Count"]):
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def _actions(statement: dict) -> list[str]:
    return _listed(statement["Action"])


def _every_action(node) -> set[str]:
    """Every action named in a policy tree, statements under an ``Fn::If`` included."""
    if isinstance(node, dict):
        found = set(_listed(node["Action"])) if "Action" in node and "Effect" in node else set()
        return found.union(*(_every_action(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_every_action(v) for v in node))
    return set()


def test_a_deploy_cannot_widen_the_stacks_roles_beyond_their_boundary():
    """The deploy's CloudFormation role writes a role of the stack only if it carries the boundary; the
    boundary allows every action the stack's roles use and nothing that would let a role grant itself
    more (IAM writes, KMS, another bucket)."""
    from fnmatch import fnmatchcase

    from cfnlint.decode import decode_str

    deploy, _ = decode_str(DEPLOY_TEMPLATE.read_text())
    boundary = deploy["Resources"]["RolesBoundary"]["Properties"]["PolicyDocument"]["Statement"]
    allowed = [a for st in boundary if st["Effect"] == "Allow" for a in _actions(st)]
    assert not any(a == "*" or a.endswith(":*") for a in allowed)
    assert {a for a in allowed if a.startswith(("iam:", "kms:", "secretsmanager:"))} == {
        "iam:PassRole",
        "secretsmanager:GetSecretValue",
    }
    buckets = json.dumps(
        [st["Resource"] for st in boundary if any(a.startswith("s3:") for a in _actions(st))]
    )
    assert "${ArtifactBucketName}" in buckets and ":s3:::*" not in buckets

    roles = {n: r for n, r in _template()["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    used = {a for role in roles.values() for a in _every_action(role["Properties"].get("Policies", []))}
    assert len(used) > 20
    missing = sorted(a for a in used if not any(fnmatchcase(a, pattern) for pattern in allowed))
    assert not missing, f"the boundary would deny what the stack's roles need: {missing}"
    for name, role in roles.items():
        assert role["Properties"]["PermissionsBoundary"] == {
            "Fn::If": ["HasRolesBoundary", {"Ref": "RolesPermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]
        }, name

    update = deploy["Resources"]["StackUpdateRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    writes = {"iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy"}
    for statement in update:
        if statement["Effect"] == "Allow" and writes & set(_actions(statement)):
            assert statement["Condition"] == {
                "StringEquals": {"iam:PermissionsBoundary": {"Ref": "RolesBoundary"}}
            }
    denied = {a for st in update if st["Effect"] == "Deny" for a in _actions(st)}
    assert "iam:DeleteRolePermissionsBoundary" in denied
