"""The template (copier.yml, template/finish.py): every file has a place, generated projects work, updates merge."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest
import yaml

from tests.helpers import ROOT

COPIER = yaml.safe_load((ROOT / "copier.yml").read_text()) if (ROOT / "copier.yml").is_file() else None
pytestmark = pytest.mark.skipif(COPIER is None, reason="not the template: no copier.yml")
CHECKED = ("src/", "conf/", "tests/", "notebooks/", "bench/")
# the pattern style copier itself uses (pathspec renamed it in 1.0)
PATTERNS = "gitignore" if int(pathspec.__version__.split(".")[0]) >= 1 else "gitwildmatch"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def template_files() -> list[str]:
    """The template's files as a clone has them (tracked, and new files not ignored yet)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [f for f in listed.stdout.splitlines() if (ROOT / f).is_file()]


def parts() -> dict[str, pathspec.PathSpec]:
    return {
        name: pathspec.PathSpec.from_lines(PATTERNS, patterns) for name, patterns in COPIER["parts"]["default"].items()
    }


def test_every_file_belongs_to_a_part():
    specs = parts()
    for path in (f for f in template_files() if f.startswith(CHECKED)):
        owners = [name for name, spec in specs.items() if spec.match_file(path)]
        assert owners, f"{path} is under no key of `parts` in copier.yml: add it to `shared` or to its family"
        assert "shared" not in owners or owners == ["shared"], f"{path} is shared and also under {owners}"


def test_every_part_is_a_choice():
    families = set(COPIER["families"]["choices"].values())
    options = {"notebooks", "bench", "extras", "shared", "template"} | {
        f"logger_{n}" for n in COPIER["loggers"]["choices"]
    }
    assert set(COPIER["parts"]["default"]) == families | options
    finish = load_finish()
    assert set(finish.DEFAULT_TASKS) == families
    assert all((ROOT / "conf" / "task" / f"{task}.yaml").is_file() for task in finish.DEFAULT_TASKS.values())


def load_finish():
    spec = importlib.util.spec_from_file_location("finish", ROOT / "template" / "finish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_sections_of_parts_not_kept_are_dropped():
    finish = load_finish()
    text = (
        "# t\n| a | <!-- family:image -->\n| b | <!-- family:text -->\n"
        "<!-- family:image -->\nimages\n<!-- option:bench -->\nspeed\n<!-- /option:bench -->\n<!-- /family:image -->\n"
        "<!-- family:text -->\ntexts\n<!-- /family:text -->\nend\n"
    )
    trimmed = finish.trim_markdown(text, {"text", "bench"})
    assert trimmed == "# t\n| b | <!-- family:text -->\n<!-- family:text -->\ntexts\n<!-- /family:text -->\nend\n"
    assert finish.trim_markdown(trimmed, {"text", "bench"}) == trimmed
    readme = (ROOT / "README.md").read_text()
    kept = set(COPIER["families"]["choices"].values()) | {"notebooks", "bench", "extras", "csv", "template"}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        assert finish.trim_markdown(text, kept) == text, page  # every section closes; all kept: nothing dropped
    assert "copier copy" not in finish.trim_markdown(readme, kept - {"template"})  # a project is no template


# ---- generated projects ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory) -> Path:
    """A git repository of the template as it is now, tagged v1.0.0 (copier works from git versions)."""
    repo = tmp_path_factory.mktemp("template") / "dltemplate"
    for name in template_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template")
    git(repo, "tag", "v1.0.0")
    return repo


def git(folder: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert result.returncode == 0, result.stderr
    return result.stdout


def generate(template: Path, destination: Path, **answers) -> Path:
    import copier

    copier.run_copy(str(template), destination, data=answers, defaults=True, unsafe=True, quiet=True)
    git(destination, "init", "-q")
    git(destination, "add", "-A")
    git(destination, "commit", "-q", "-m", "generated")
    return destination


def run(project: Path, *args: str, timeout: float = 1200, **env: str) -> subprocess.CompletedProcess:
    """A command in the generated project, with this environment's packages and the project's own code first."""
    environment = {**os.environ, "PYTHONPATH": f"{project / 'src'}{os.pathsep}{project}", **env}
    environment.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, *args], cwd=project, env=environment, capture_output=True, text=True, timeout=timeout
    )


PROJECTS = {
    "regression": {"families": ["regression"], "notebooks": True, "bench": False, "loggers": [], "extras": False},
    "all": {"families": ["regression", "tabular", "image", "text", "series"], "notebooks": True, "bench": True},
    "text_only": {"families": ["text"], "notebooks": False, "bench": True, "loggers": ["csv"]},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", PROJECTS)
def test_a_generated_project_passes_its_own_tests_and_trains(template_repo, tmp_path, name):
    answers = PROJECTS[name]
    project = generate(
        template_repo, tmp_path / "project", project_name=f"Project {name}", package_name=f"pkg_{name}", **answers
    )
    package = project / "src" / f"pkg_{name}"
    assert package.is_dir() and not (project / "src" / "dltemplate").exists()
    assert not (project / "copier.yml").exists() and not (project / "template").exists()
    assert not (project / "tests" / "test_template.py").exists()
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.name != ".copier-answers.yml":
            assert b"dltemplate" not in path.read_bytes(), path
    readme = (project / "README.md").read_text()
    assert readme.startswith(f"# Project {name}\n")
    families = set(answers["families"])
    assert (project / "docs" / "texts.md").exists() == ("text" in families)
    assert (project / "docs" / "images.md").exists() == ("image" in families)
    assert ("docs/texts.md" in readme) == ("text" in families)  # the README links only pages it has
    assert (package / "image" / "nets" / "resnet.py").exists() == ("image" in families)
    assert (package / "extras").is_dir() == answers.get("extras", True)
    assert (project / "notebooks").exists() == answers["notebooks"]
    assert (project / "bench").exists() == answers["bench"]
    assert (project / "conf" / "logger" / "csv.yaml").exists() == ("csv" in answers.get("loggers", ["csv"]))
    tests = run(project, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow")
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    # make train: the default task, on data the project's own test helpers write where it looks
    data = tmp_path / "data"
    task = yaml.safe_load((project / "conf" / "train.yaml").read_text())["defaults"]
    task = next(entry["task"] for entry in task if isinstance(entry, dict) and "task" in entry)
    provide = f"import pathlib, tests.datasets as d; d.provide_task_data({task!r}, pathlib.Path({str(data)!r}))"
    assert run(project, "-c", provide).returncode == 0
    trained = run(project, "train.py", "debug=limit_batches", f"paths.log_dir={tmp_path / 'logs'}", DATA_DIR=str(data))
    assert trained.returncode == 0, trained.stderr[-4000:]
    assert (tmp_path / "logs" / task / "runs").is_dir()


@pytest.mark.slow
def test_copier_update_brings_a_template_change_into_a_project(template_repo, tmp_path):
    template = tmp_path / "template"
    shutil.copytree(template_repo, template)
    project = generate(
        template, tmp_path / "project", project_name="Mine", package_name="mine", families=["regression"], bench=False
    )
    # the project's own change, committed
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nOur own notes.\n")
    git(project, "commit", "-q", "-am", "our notes")
    # a template change: a new line in a shared file, a new config, a change to a family not kept
    mlp = template / "src" / "dltemplate" / "nets" / "mlp.py"
    mlp.write_text(mlp.read_text() + "\n# see dltemplate.nets.mlp.MLP\n")
    (template / "conf" / "trainer" / "cpu_small.yaml").write_text("defaults:\n  - cpu\n\nmax_epochs: 2\n")
    text = template / "conf" / "task" / "imdb.yaml"
    text.write_text(text.read_text() + "# changed\n")
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "template change")
    git(template, "tag", "v1.1.0")

    import copier

    copier.run_update(project, defaults=True, unsafe=True, overwrite=True, quiet=True)

    assert (project / "src" / "mine" / "nets" / "mlp.py").read_text().endswith("\n# see mine.nets.mlp.MLP\n")
    assert (project / "conf" / "trainer" / "cpu_small.yaml").is_file()
    assert not (project / "conf" / "task" / "imdb.yaml").exists()  # the text family stays out
    assert not (project / "src" / "dltemplate").exists()
    assert readme.read_text().endswith("\nOur own notes.\n")
    assert "_commit: v1.1.0" in (project / ".copier-answers.yml").read_text()
    assert not list(project.rglob("*.rej"))
    checked = run(
        project, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_nets.py", "tests/test_configs.py"
    )
    assert checked.returncode == 0, checked.stdout[-3000:]


@pytest.mark.parametrize(
    ("name", "refused"),
    [("mine", False), ("my_project2", False), ("class", True), ("torch", True), ("json", True), ("Bad", True)],
)
def test_a_package_name_that_would_break_the_project_is_refused(name, refused):
    pytest.importorskip("jinja2_ansible_filters")  # copier's filters (regex_search), installed with copier
    from jinja2 import Environment

    environment = Environment(extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"])
    message = environment.from_string(COPIER["package_name"]["validator"]).render(package_name=name).strip()
    assert bool(message) == refused, message
