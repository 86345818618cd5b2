"""Module paths that moved (`dltemplate.moved`): old `_target_`s, as old checkpoints store them, still resolve."""

import importlib
import importlib.util
import inspect

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule

from dltemplate import registry
from dltemplate.errors import ConfigError
from dltemplate.moved import MOVED
from dltemplate.nets.mlp import MLP

KINDS = ((LightningDataModule, "datamodule"), (LightningModule, "module"), (torch.nn.Module, "net"))


def test_an_old_module_path_resolves_to_the_class_at_its_new_path(monkeypatch):
    monkeypatch.setitem(MOVED, "dltemplate.old_place.mlp", "dltemplate.nets.mlp")
    assert registry.resolve("dltemplate.old_place.mlp.MLP", "net") is MLP
    registry.check_names({"_target_": "dltemplate.old_place.mlp.MLP"}, "net")
    with pytest.raises(ConfigError, match="not an allowed datamodule"):  # still checked against its kind
        registry.resolve("dltemplate.old_place.mlp.MLP", "datamodule")
    with pytest.raises(ConfigError, match="not an allowed net"):  # a re-export at the new path stays refused
        registry.resolve("dltemplate.old_place.mlp.nn", "net")


def test_a_name_in_a_folders_own_subpackage_is_allowed_and_checked_like_any_other():
    assert registry.Namespace("nets", "torch.nn:Module").allows("dltemplate.image.nets.resnet", "ResNet")
    assert registry.Namespace("data", "torch.nn:Module").allows("dltemplate.tabular.data.tabular", "X")
    assert not registry.Namespace("nets", "torch.nn:Module").allows("dltemplate.image.nets", "ResNet")
    assert not registry.Namespace("nets", "torch.nn:Module").allows("dltemplate.a.b.nets.x", "Net")  # too deep
    assert not registry.Namespace("nets", "torch.nn:Module").allows("other.image.nets.x", "Net")
    with pytest.raises(ConfigError, match="does not exist or does not define"):
        registry.resolve("dltemplate.no_family.nets.x.Net", "net")


def moved_classes() -> list[tuple[str, type, str]]:
    """(old `_target_`, class, kind) for every class of a kind defined in a module that moved."""
    found = []
    for old, new in sorted(MOVED.items()):
        try:
            present = importlib.util.find_spec(new) is not None
        except ModuleNotFoundError:  # its family's folder is not in this project
            present = False
        if not present:
            continue
        module = importlib.import_module(new)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__ == new:
                kind = next((kind for base, kind in KINDS if issubclass(obj, base)), None)
                if kind is not None:
                    found.append((f"{old}.{name}", obj, kind))
    return found


@pytest.mark.parametrize(
    ("target", "cls", "kind"), moved_classes() or [pytest.param(None, None, None, marks=pytest.mark.skip)]
)
def test_every_moved_class_resolves_from_its_old_target(target, cls, kind):
    assert registry.resolve(target, kind) is cls


def test_a_checkpoint_that_names_old_module_paths_restores(make_cfg, monkeypatch, tmp_path):
    """Every `_target_` of a real checkpoint rewritten to an old path (as a checkpoint saved before a move
    would hold): `restore` checks and builds them at their new place, and the weights are the same."""
    from dltemplate.checkpoint import restore
    from dltemplate.train import train

    cfg = make_cfg("task=rings", "trainer.max_epochs=1", "callbacks.histograms=null")
    result = train(cfg)
    new = {"dltemplate.nets.mlp": "dltemplate.old_place.mlp"}
    for module in ("dltemplate.modules.classification", f"dltemplate.{_rings_data_module()}"):
        new[module] = module.replace("dltemplate.", "dltemplate.old_place.", 1)
    for current, old in new.items():
        monkeypatch.setitem(MOVED, old, current)
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    renamed = 0

    def rename(value):
        nonlocal renamed
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key == "_target_" and isinstance(item, str) and item.rpartition(".")[0] in new:
                    module, _, name = item.rpartition(".")
                    item, renamed = f"{new[module]}.{name}", renamed + 1
                out[key] = rename(item)
            return out
        if isinstance(value, list):
            return [rename(item) for item in value]
        return value

    checkpoint = rename(checkpoint)
    assert renamed >= 3  # the data module, the module and the net, in the config and the hyperparameters
    old_path = tmp_path / "old.ckpt"
    torch.save(checkpoint, old_path)
    module, _, _ = restore(old_path)
    assert type(module.net).__module__ == "dltemplate.nets.mlp"
    expected = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(module.state_dict()[key], value) for key, value in expected.items())


def _rings_data_module() -> str:
    import yaml

    from tests.helpers import CONFIG_DIR

    target = yaml.safe_load((CONFIG_DIR / "data" / "rings.yaml").read_text())["_target_"]
    return target.rpartition(".")[0].removeprefix("dltemplate.")
