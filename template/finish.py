"""Finish a project generated from this template; copier runs it (copier.yml, _tasks) after every
copy and update, in the new project's folder:

    python template/finish.py --project-name "My project" --package my_project --keep regression,text,csv

1. moves the package `src/dltemplate` to `src/<package>` (on an update, the template's new files
   are moved over the project's: copier then re-applies the project's own changes);
2. writes `<package>` wherever a text file says `dltemplate` (not in copier's answers file), and the
   project name as the README's title;
3. removes, from every Markdown file, the sections and lines marked for families and options that
   were not kept: a section between `<!-- family:image -->` and `<!-- /family:image -->` lines (or
   `option:notebooks`, `option:bench`, `option:csv`), or one line that ends with such a marker;
4. makes the first kept family's reference task the default task when the current one is gone;
5. removes folders left empty.

Every step leaves a finished project as it is, so running it again changes nothing. That matters
for `copier update`: copier renders the project's old template version and the new one in
temporary folders, and the new one over the project itself, running this script after each; the
three then agree on file names and contents, and copier re-applies the project's own changes (the
difference between the old rendering and the project) on top.
"""

import argparse
import os
import re
import shutil
from pathlib import Path

TEMPLATE_PACKAGE = "dltemplate"
# the reference task of each family: the default task of a project that keeps that family first
DEFAULT_TASKS = {
    "regression": "linear_regression",
    "tabular": "titanic",
    "image": "cifar2",
    "text": "imdb",
    "series": "covid",
}
SKIPPED = {".git", ".venv", ".cache", "__pycache__", "node_modules"}  # at any depth
SKIPPED_AT_ROOT = {"data", "logs", "outputs", "multirun"}  # run outputs and datasets
ANSWERS_FILE = ".copier-answers.yml"
MARKER = re.compile(r"<!-- (?P<close>/)?(?:family|option):(?P<name>[\w-]+) -->")


def move_package(root: Path, package: str) -> None:
    source, target = root / "src" / TEMPLATE_PACKAGE, root / "src" / package
    if package == TEMPLATE_PACKAGE or not source.is_dir():
        return
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)
    shutil.rmtree(source)


def text_files(root: Path):
    """Every UTF-8 text file of the project, with its text; skips caches, data and copier's answers."""
    for folder, dirs, files in os.walk(root):
        at_root = Path(folder) == root
        dirs[:] = [d for d in dirs if not skipped(d, at_root)]
        for name in files:
            path = Path(folder) / name
            if path.name == ANSWERS_FILE or path.is_symlink():
                continue
            data = path.read_bytes()
            if b"\0" in data:
                continue
            try:
                yield path, data.decode("utf-8")
            except UnicodeDecodeError:
                continue


def trim_markdown(text: str, kept: set[str]) -> str:
    """Drop the sections and lines marked for parts that are not kept; keep the others' markers."""
    out, open_blocks = [], []  # open_blocks: (name, kept?) of the sections we are inside
    for line in text.splitlines(keepends=True):
        match = MARKER.search(line)
        inside_dropped = any(not keep for _, keep in open_blocks)
        if match and line.strip() == match.group(0):  # a section's first or last line
            name = match.group("name")
            if match.group("close"):
                if not open_blocks or open_blocks[-1][0] != name:
                    raise ValueError(f"<!-- /...:{name} --> closes a section that is not open")
                open_blocks.pop()
            else:
                open_blocks.append((name, name in kept))
            if not inside_dropped and name in kept:
                out.append(line)
        elif not inside_dropped and not (match and match.group("name") not in kept):
            out.append(line)
    if open_blocks:
        raise ValueError(f"section {open_blocks[-1][0]!r} is never closed")
    return "".join(out)


def set_default_task(root: Path, kept: set[str]) -> None:
    train = root / "conf" / "train.yaml"
    if not train.is_file():
        return
    text = train.read_text()
    current = re.search(r"^  - task: (\S+)$", text, flags=re.MULTILINE)
    if current is None or (root / "conf" / "task" / f"{current.group(1)}.yaml").is_file():
        return
    task = next((t for family, t in DEFAULT_TASKS.items() if family in kept), None)
    if task is not None:
        train.write_text(text[: current.start(1)] + task + text[current.end(1) :])


def skipped(name: str, at_root: bool) -> bool:
    return name in SKIPPED or name.endswith(".egg-info") or (at_root and name in SKIPPED_AT_ROOT)


def remove_empty_folders(folder: Path, root: Path) -> bool:
    """Remove the empty folders under `folder` (not caches or data); return whether `folder` is empty now."""
    empty = True
    for path in folder.iterdir():
        if (
            path.is_dir()
            and not path.is_symlink()
            and not skipped(path.name, folder == root)
            and remove_empty_folders(path, root)
        ):
            path.rmdir()
        else:
            empty = False
    return empty


def finish(root: Path, project_name: str, package: str, kept: set[str]) -> None:
    move_package(root, package)
    for path, text in text_files(root):
        new = text.replace(TEMPLATE_PACKAGE, package)
        if path.suffix == ".md":
            new = trim_markdown(new, kept)
        if path == root / "README.md" and new.startswith(f"# {package}\n"):
            new = f"# {project_name}\n" + new.split("\n", 1)[1]
        if new != text:
            path.write_text(new, encoding="utf-8")
    set_default_task(root, kept)
    remove_empty_folders(root, root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-name", required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--keep", required=True, help="comma-separated families and options kept")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project's folder (default: here)")
    args = parser.parse_args()
    finish(args.root, args.project_name, args.package, {k for k in args.keep.split(",") if k})


if __name__ == "__main__":
    main()
