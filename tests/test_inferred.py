"""The shared record of settings inferred from the data: explicit wins, table printed, saved with the run."""

import logging

import yaml
from lightning.pytorch import LightningDataModule
from omegaconf import OmegaConf

from dltemplate.build import record_inferred
from dltemplate.data.inferred import INFERRED_FILE, InfersSettings


class Toy(InfersSettings, LightningDataModule):
    def __init__(self, channels: int | None = None, image_size: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)


def test_an_explicit_setting_wins_and_only_what_was_inferred_is_recorded():
    data = Toy(channels=3)
    assert data.infer("channels", 1, "every file is grayscale") == 3
    assert data.infer("image_size", 28, "every image is 28×28") == 28
    assert data.infer("dims.width", 64, "2,000 short texts") == 64
    assert data.hparams.image_size == 28
    assert list(data.inferred) == ["image_size", "dims.width"]


def test_inferred_settings_reach_the_run_config_a_table_and_the_run_directory(tmp_path, caplog):
    data = Toy()
    data.infer("image_size", 28, "every image is 28×28")
    data.infer("dims.width", 64, "2,000 short texts")
    cfg = OmegaConf.create({"data": {"channels": 3, "image_size": None}, "paths": {"output_dir": str(tmp_path)}})
    with caplog.at_level(logging.INFO, logger="dltemplate.build"):
        record_inferred(cfg, data)
    assert cfg.data.image_size == 28 and "width" not in cfg.data  # dims.* are shown, not config settings
    table = caplog.text
    assert "data.image_size" in table and "every image is 28×28" in table and "dims.width" in table
    saved = yaml.safe_load((tmp_path / INFERRED_FILE).read_text(encoding="utf-8"))
    assert saved == {
        "data.image_size": {"value": 28, "from": "every image is 28×28"},
        "dims.width": {"value": 64, "from": "2,000 short texts"},
    }


def test_nothing_inferred_writes_nothing(tmp_path):
    cfg = OmegaConf.create({"data": {"channels": 3}, "paths": {"output_dir": str(tmp_path)}})
    record_inferred(cfg, Toy(channels=3))
    assert not (tmp_path / INFERRED_FILE).exists()
