"""Project hygiene: commit hooks, pinned dependency versions, the CI matrix, the Docker image and dev container."""

import json
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from tests.helpers import ROOT


def pins() -> dict[str, str]:
    """constraints.txt as {normalised name: version}."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            found[normalise(name)] = version.split(";")[0].strip()
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_dependency_is_pinned_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pinned = pins()
    for requirement in map(Requirement, requirements):
        if normalise(requirement.name) == normalise(project["name"]):
            continue  # the project's own extras
        assert normalise(requirement.name) in pinned, f"{requirement.name} is not in constraints.txt: run make lock"
        assert requirement.specifier.contains(pinned[normalise(requirement.name)], prereleases=True), requirement


def test_make_install_gives_jupyter_lab_and_notebook_caches_stay_out_of_git():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(extra: str) -> set[str]:  # the extra's packages, with the project's own extras it includes
        found = set()
        for requirement in map(Requirement, extras[extra]):
            found |= set().union(*map(names, requirement.extras)) if requirement.extras else {requirement.name}
        return found

    assert {"jupyterlab", "nbconvert", "ipykernel"} <= names("dev")  # make install: pip install -e ".[dev]"
    assert '-e ".[dev]"' in (ROOT / "Makefile").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/.cache/images/x.pt"], cwd=ROOT)
    assert ignored.returncode == 0, "notebooks/.cache/ (built by running the notebooks) is not git-ignored"


def test_installs_use_the_pinned_versions():
    makefile = (ROOT / "Makefile").read_text()
    assert "CONSTRAINTS ?= constraints.txt" in makefile and "-c $(CONSTRAINTS)" in makefile
    assert "constraints.txt" in (ROOT / "Dockerfile").read_text()


def test_ci_tests_every_supported_python_and_the_newest_releases_weekly():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "schedule" in triggers and "pull_request" in triggers
    jobs = workflow["jobs"]
    versions = jobs["test"]["strategy"]["matrix"]["python-version"]
    minimum = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"].removeprefix(">=")
    assert versions[0] == minimum and len(versions) >= 3
    assert any("make test" in step.get("run", "") for step in jobs["test"]["steps"])
    assert any("make test CONSTRAINTS=" in step.get("run", "") for step in jobs["latest"]["steps"])


def test_commit_hooks_match_the_pinned_tools():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: repo["rev"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "ruff-format", "nbstripout", "check-added-large-files"} <= set(hooks)
    assert hooks["ruff"].removeprefix("v") == pins()["ruff"]
    assert hooks["nbstripout"] == pins()["nbstripout"]
    result = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dev_container_installs_the_project():
    text = "\n".join(
        line
        for line in (ROOT / ".devcontainer" / "devcontainer.json").read_text().splitlines()
        if not line.lstrip().startswith("//")
    )
    container = json.loads(text)
    assert "constraints.txt" in container["postCreateCommand"] and "make install" in container["postCreateCommand"]


def docker_daemon() -> str | None:
    """None when a Docker daemon answers; otherwise why not."""
    if shutil.which("docker") is None:
        return "no docker command"
    result = subprocess.run(["docker", "info"], capture_output=True, text=True)
    return None if result.returncode == 0 else f"no Docker daemon: {result.stderr.strip().splitlines()[-1][:120]}"


@pytest.mark.slow
@pytest.mark.skipif(docker_daemon() is not None, reason=docker_daemon() or "")
def test_the_cpu_image_builds_and_trains():
    tag = "dltemplate-test:cpu"
    build = subprocess.run(["docker", "build", "-t", tag, "."], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        run = subprocess.run(
            ["docker", "run", "--rm", "--network=none", tag, "python", "train.py", "debug=fast_dev_run"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)
