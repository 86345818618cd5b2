"""Every config composes; every net and module config instantiates; bad choices fail clearly."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_class
from omegaconf import OmegaConf

from dltemplate.build import build_datamodule, build_module
from dltemplate.errors import ConfigError
from tests.datasets import provide_task_data
from tests.helpers import CONFIG_DIR, TASKS

GROUPS = ("trainer", "logger", "callbacks", "debug", "experiment", "module/optimizer", "tuner")


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if p.stem != "default" or group != "trainer")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_builds_its_data_and_module(make_cfg, tmp_path, task):
    cfg = make_cfg(f"task={task}", *provide_task_data(task, tmp_path / "data"))
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves once dims are known
    assert cfg.task_name == task
    assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize(("group", "choice"), [(g, c) for g in GROUPS for c in choices(g)])
def test_every_group_choice_composes(make_cfg, group, choice):
    cfg = make_cfg(f"{group}={choice}")
    for node in ([cfg.trainer] if group == "trainer" else []) + list((cfg.get("callbacks") or {}).values()):
        if node is not None:  # null switches a callback off
            get_class(node._target_)  # names an importable class


def test_evaluate_config_composes(make_cfg, tmp_path: Path):
    from dltemplate.config import compose_config

    cfg = compose_config(CONFIG_DIR, ["ckpt_path=x.ckpt"], output_dir=tmp_path, config_name="evaluate")
    assert cfg.ckpt_path == "x.ckpt" and cfg.trainer.accelerator == "cpu"


def test_unknown_task_lists_the_choices(tmp_path):
    from dltemplate.config import compose_config

    with pytest.raises(MissingConfigException) as error:
        compose_config(CONFIG_DIR, ["task=no_such_task"], output_dir=tmp_path)
    for task in TASKS:
        assert task in str(error.value)


def test_unknown_key_is_refused(make_cfg):
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        make_cfg("module.no_such_key=1")


def test_data_dir_comes_from_the_environment(monkeypatch, tmp_path):
    from dltemplate.config import compose_config

    monkeypatch.setenv("DATA_DIR", "/somewhere/else")
    cfg = compose_config(CONFIG_DIR, [], output_dir=tmp_path)
    assert cfg.paths.data_dir == "/somewhere/else"


LAUNCHERS = sorted(p.stem for p in (CONFIG_DIR / "hydra" / "launcher").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("trainer", ["ddp", "ddp_cpu"])
def test_every_launcher_composes_with_multi_node_trainers(tmp_path, launcher, trainer):
    from hydra import compose, initialize_config_dir

    overrides = [f"hydra/launcher={launcher}", f"trainer={trainer}", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher_cfg = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert cfg.trainer.num_nodes == 2
    if launcher == "slurm":
        assert (launcher_cfg["nodes"], launcher_cfg["tasks_per_node"], launcher_cfg["gpus_per_node"]) == (2, 4, 4)


def test_the_slurm_launcher_refuses_an_uncounted_device_setting():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp"], return_hydra_config=True)
    with pytest.raises(Exception, match=r"trainer\.devices=-1 is not a count"):
        OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_composes_with_a_multi_node_trainer(make_cfg, search):
    cfg = make_cfg(f"hparams_search={search}", "trainer=ddp", "trainer.num_nodes=2")
    assert cfg.optuna.n_trials > 0 and cfg.trainer.num_nodes == 2


def test_a_module_whose_objective_differs_from_the_data_is_refused_before_training(make_cfg, tmp_path):
    """data.task and the module cannot disagree silently (a regression module fed class codes)."""
    cfg = make_cfg("task=titanic", "module=regression")
    provide_task_data("titanic", tmp_path / "data")
    with pytest.raises(ConfigError, match=r"data.task=classification needs a classification module.*or data.task"):
        build_module(cfg, build_datamodule(cfg))
    cfg = make_cfg("task=rings", "module=regression", run="rings")
    with pytest.raises(ConfigError, match=r"data=RingsDataModule needs a classification module"):
        build_module(cfg, build_datamodule(cfg))
