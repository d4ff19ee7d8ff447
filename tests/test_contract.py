"""The repository's contracts: openapi.yaml equals the app's schema; docker-compose.yml holds
the services the deployment needs and passes `docker compose config` where Compose exists."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.api.main import create_app

REPO = Path(__file__).resolve().parent.parent


def test_openapi_yaml_is_the_app_schema() -> None:
    committed = yaml.safe_load((REPO / "openapi.yaml").read_text())
    live = json.loads(json.dumps(create_app().openapi()))
    assert committed == live, "openapi.yaml is stale: run `tokengraft openapi > openapi.yaml`"


def test_every_error_response_is_documented_as_problem_json() -> None:
    spec = create_app().openapi()
    errors = [
        (path, method, code, response)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        for code, response in operation["responses"].items()
        if code[0] in "45"
    ]
    assert len(errors) > 20
    for path, method, code, response in errors:
        assert list(response["content"]) == ["application/problem+json"], (path, method, code)
    expected = {"/transplant", "/jobs", "/jobs/{job_id}/events", "/jobs/{job_id}/checkpoint.tar",
                "/jobs/{job_id}/artifacts/{path}", "/metrics", "/readyz"}  # fmt: skip
    assert expected <= set(spec["paths"])


def test_compose_file_has_the_deployment() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "seaweedfs", "migrate", "bucket", "api", "worker"}
    for store in ("postgres", "seaweedfs"):
        assert services[store]["healthcheck"]["test"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["bucket"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        for one_shot in ("migrate", "bucket"):
            assert services[name]["depends_on"][one_shot]["condition"] == (
                "service_completed_successfully"
            )
        command = services[name]["command"]
        assert command[command.index("--storage") + 1] == "s3://tokengraft/artifacts"
        assert services[name]["environment"]["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_compose_workers_mount_no_shared_volume() -> None:
    """Workers on other machines share nothing but the database and the store."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]

    def volumes(name: str) -> set[str]:
        return {v.split(":")[0] for v in services[name].get("volumes", [])}

    others = set().union(*(volumes(name) for name in services if name != "worker"))
    assert volumes("worker") and not volumes("worker") & others


def test_compose_config_passes() -> None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose", "config", "--quiet"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose", "config", "--quiet"]
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here")
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_what_the_guard_answers_is_declared() -> None:
    spec = create_app().openapi()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"400", "431"} <= codes, (path, method)
            assert ("401" in codes) == (path not in ("/healthz", "/readyz")), (path, method)
            assert ("403" in codes) == ("401" in codes and method not in ("get", "head"))
            assert ("413" in codes) == ("requestBody" in operation), (path, method)
