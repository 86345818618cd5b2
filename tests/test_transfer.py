"""Transfer learning: timm and transformer backbones, offline; fine-tuning policy; restores that never download."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from omegaconf import OmegaConf

pytest.importorskip("timm")
pytest.importorskip("transformers")

from dltemplate.build import build_datamodule
from dltemplate.checkpoint import load_checkpoint, restore
from dltemplate.config import compose_config
from dltemplate.errors import ConfigError
from dltemplate.extras.export import export_checkpoint
from dltemplate.image.nets.timm import TimmNet
from dltemplate.modules.classification import ClassificationModule
from dltemplate.modules.factories import build_net, no_downloads, without_downloads
from dltemplate.modules.optimizers import build_optimizer, parameter_groups
from dltemplate.modules.schedulers import build_scheduler
from dltemplate.predict import predict
from dltemplate.text.nets.transformer import TransformerNet
from dltemplate.train import train
from tests.datasets import class_images, provide_task_data, write_timm_weights, write_tiny_bert
from tests.helpers import CONFIG_DIR


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


def serve(folder: Path):
    """A loopback HTTP server for `folder` that records every path asked for: (base URL, requests, stop)."""
    requests: list[str] = []
    handler = type("Handler", (RecordingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", requests, server.shutdown


# ---- nets -----------------------------------------------------------------------------------------


def test_timm_weights_from_a_file_or_a_url_fill_the_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # where torch.hub keeps downloads
    path = write_timm_weights(tmp_path / "w" / "test_resnet.pth")
    saved = torch.load(path, weights_only=True)
    base, requests, stop = serve(path.parent)
    try:
        for source in (str(path), f"{base}/test_resnet.pth"):
            net = TimmNet("test_resnet", out_features=3, weights=source)
            loaded = net.backbone.state_dict()
            assert all(torch.equal(loaded[k], v) for k, v in saved.items() if not k.startswith("fc."))
            assert "fc.weight" not in loaded and net.head[-1].out_features == 3  # the file's classifier is dropped
    finally:
        stop()
    assert requests == ["/test_resnet.pth"]
    gray = TimmNet("test_resnet", in_chans=1, weights=str(path))  # first convolution adapted to 1 channel
    assert gray.backbone.conv1[0].weight.shape[1] == 1 and gray(torch.randn(2, 1, 32, 32)).shape == (2, 1)


def test_torchvision_weights_come_from_a_filled_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision

    from dltemplate.image.nets.torchvision import TorchvisionNet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    saved = torchvision.models.mobilenet_v3_small().state_dict()  # random weights, as if downloaded
    torch.save(saved, cached)
    net = TorchvisionNet("mobilenet_v3_small", out_features=2, pretrained=True)
    loaded = net.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items() if not k.startswith("classifier.3."))
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 2)
    settings = TorchvisionNet.data_settings({"model_name": "mobilenet_v3_small", "pretrained": True})
    assert settings == {"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert TorchvisionNet.data_settings({"model_name": "resnet18", "pretrained": False, "weights": None}) == {}


def test_a_name_timm_does_not_know_is_refused():
    with pytest.raises(ConfigError, match="not a timm model"):
        TimmNet("resnet_nonexistent")


def test_nets_rebuilt_from_a_checkpoint_load_no_weights_and_read_no_architecture(tmp_path):
    with pytest.raises(ConfigError, match="may not set"):  # weights only through pretrained / weights
        TimmNet("test_resnet", model_kwargs={"checkpoint_path": str(tmp_path / "w.pth")})
    timm_net = {"_target_": "dltemplate.image.nets.timm.TimmNet", "model_name": "test_resnet", "weights": "http://x/w"}
    assert without_downloads(timm_net) == {**timm_net, "pretrained": False, "weights": None}
    transformer = {
        "_target_": "dltemplate.text.nets.transformer.TransformerNet",
        "model_name": "distilbert-base-uncased",
    }
    assert without_downloads(transformer) == {**transformer, "pretrained": False, "offline": True}
    with no_downloads(), pytest.raises(ValueError, match="holds no architecture"):
        build_net(transformer)  # a checkpoint without the architecture: refused, not looked up on the hub


def test_tiny_bert_loads_from_its_folder_and_masks_the_padding(tmp_path):
    folder = write_tiny_bert(tmp_path / "bert")
    net = TransformerNet(str(folder), out_features=2, pretrained=True, pooling="mean").eval()
    from safetensors.torch import load_file

    weights = load_file(folder / "model.safetensors")
    state = net.backbone.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items() if k in state)
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)  # [PAD] = 0
    assert torch.allclose(net(ids), net(padded), atol=1e-5)  # padding changes nothing
    config = TransformerNet.complete_config({"model_name": str(folder)})["config"]
    rebuilt = TransformerNet("no/such/folder", out_features=2, config=config)  # the architecture alone
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in net.parameters())
    with pytest.raises(ValueError, match="not a transformers model type"):
        TransformerNet("x", config={**config, "model_type": "my_remote_code_model"})
    with pytest.raises(TypeError):
        TransformerNet(str(folder), trust_remote_code=True)


# ---- fine-tuning policy ----------------------------------------------------------------------------


def finetune_module(**finetune) -> ClassificationModule:
    net = TimmNet("test_resnet", out_features=1)
    optimizer = {"_target_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.05}
    return ClassificationModule(net, optimizer=optimizer, finetune=finetune)


def test_backbone_and_head_get_their_learning_rates():
    module = finetune_module(backbone_lr_scale=0.1)
    optimizer = build_optimizer(module.optimizer_spec, module, 0.1)
    lrs = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert lrs == {
        "decayed": (1e-2, 0.05),
        "not_decayed": (1e-2, 0.0),
        "backbone/decayed": (pytest.approx(1e-3), 0.05),
        "backbone/not_decayed": (pytest.approx(1e-3), 0.0),
    }
    backbone = {id(p) for p in module.net.backbone.parameters()}
    for group in optimizer.param_groups:
        assert all((id(p) in backbone) == group["name"].startswith("backbone/") for p in group["params"])
    config = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 1e-2, "total_steps": 10}
    scheduler = build_scheduler(config, optimizer)
    peaks = [g["max_lr"] for g in scheduler.optimizer.param_groups]
    assert peaks == [1e-2, 1e-2, pytest.approx(1e-3), pytest.approx(1e-3)]
    with pytest.raises(ConfigError, match="no `backbone`"):
        parameter_groups(torch.nn.Linear(2, 1), 0.0, 1e-3, backbone_lr_scale=0.1)


class Snapshots(Callback):
    """The backbone's parameters and BatchNorm statistics, and the head's, after each training epoch."""

    def __init__(self, module):
        self.states = [self.take(module)]

    @staticmethod
    def take(module):
        return {k: v.detach().clone() for k, v in module.net.state_dict().items()}

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append(self.take(pl_module))


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_the_backbone_stays_frozen_for_its_epochs_then_trains(tmp_path):
    torch.manual_seed(0)
    module = finetune_module(freeze_epochs=1, backbone_lr_scale=0.5)
    images = torch.cat([class_images(16, 0, 32), class_images(16, 1, 32)]).float().div(255)
    labels = torch.tensor([0] * 16 + [1] * 16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8, shuffle=True)
    snapshots = Snapshots(module)
    trainer = Trainer(
        max_epochs=2, callbacks=[snapshots], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, loader)
    before, frozen, trained = snapshots.states
    backbone = [k for k in before if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    assert any("running_mean" in k for k in backbone)  # BatchNorm statistics are checked too
    assert all(torch.equal(before[k], frozen[k]) for k in backbone)  # epoch 0: nothing in the backbone moved
    assert not torch.equal(before["head.1.weight"], frozen["head.1.weight"])  # ... while the head trained
    changed = [k for k in backbone if not torch.equal(frozen[k], trained[k])]
    assert len(changed) == len(backbone)  # epoch 1: every backbone tensor moved
    assert trainer.callback_metrics["finetune/backbone_frozen"] == 0.0


def test_an_unknown_finetune_key_is_refused():
    with pytest.raises(ConfigError, match="unknown key"):
        finetune_module(freeze_epoch=1)


# ---- whole runs: train, checkpoint, predict, export, restore ---------------------------------------


def test_pretrained_timm_input_size_and_normalisation_replace_the_data_statistics(make_cfg, tmp_path):
    overrides = provide_task_data("cifar2_finetune", tmp_path / "data")
    cfg = make_cfg("task=cifar2_finetune", *[o for o in overrides if not o.startswith("data.input_size")])
    datamodule = build_datamodule(cfg)
    assert cfg.data.input_size == 160 and list(cfg.data.mean) == [0.5, 0.5, 0.5]  # test_resnet's pretrained config
    state = datamodule.state_dict()
    assert (state["mean"], state["std"], state["input_size"], state["size"]) == ([0.5] * 3, [0.5] * 3, 160, [16, 16])
    batch = datamodule.on_after_batch_transfer(datamodule.train_set.__getitems__([0, 1]), 0)
    assert batch[0].shape == (2, 3, 160, 160)
    explicit = make_cfg("task=cifar2_finetune", *overrides, "data.mean=[0.4,0.4,0.4]", "data.std=[0.2,0.2,0.2]")
    build_datamodule(explicit)
    assert explicit.data.input_size == 32 and list(explicit.data.mean) == [0.4] * 3  # explicit settings win


@pytest.mark.slow  # trains a pretrained backbone end to end: tens of seconds on a CPU
def test_cifar2_finetune_trains_predicts_exports_and_restores_offline(make_cfg, tmp_path):
    overrides = provide_task_data("cifar2_finetune", tmp_path / "data")
    result = train(make_cfg("task=cifar2_finetune", "trainer.max_epochs=2", "data.batch_size=8", *overrides))
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["ImageDataModule"]["mean"] == [0.5, 0.5, 0.5]
    assert checkpoint["hyper_parameters"]["finetune"]["backbone_lr_scale"] == 0.1

    Path(OmegaConf.select(OmegaConf.create(checkpoint["config"]), "net.weights")).unlink()  # not needed any more
    images = tmp_path / "data" / "cifar2" / "test"
    overrides = [f"ckpt_path={result.best_checkpoint}", f"input={images}", f"output={tmp_path / 'p.csv'}"]
    table = predict(compose_config(CONFIG_DIR, overrides, output_dir=tmp_path, config_name="predict"))
    truth = [Path(f).parent.name for f in table["file"]]
    assert (table["prediction"] == truth).mean() == pytest.approx(result.metrics["test/acc"], abs=1e-6)
    export = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", "format=onnx", f"paths.data_dir={tmp_path / 'data'}"],
        output_dir=tmp_path / "export",
        config_name="export",
    )
    path, difference = export_checkpoint(export)
    assert path.is_file() and difference < 1e-4


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_a_restored_checkpoint_never_fetches_the_weights_its_config_names(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = provide_task_data("cifar2_finetune", tmp_path / "data")
    weights = Path(next(o for o in overrides if o.startswith("net.weights=")).split("=", 1)[1])
    base, requests, stop = serve(weights.parent)
    url = f"{base}/{weights.name}"
    try:
        overrides = [o for o in overrides if not o.startswith("net.weights=")] + [f"net.weights={url}"]
        result = train(make_cfg("task=cifar2_finetune", "trainer.max_epochs=1", "test=false", *overrides))
        assert requests == [f"/{weights.name}"]  # training fetched the URL once: the server works
        shutil.rmtree(tmp_path / "torch_home")
        path = Path(result.best_checkpoint)
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["config"]["net"]["weights"] == url  # the run's record
        assert checkpoint["hyper_parameters"]["net"]["weights"] is None  # what the module is rebuilt from
        ClassificationModule.load_from_checkpoint(path, weights_only=True)  # Lightning's own way: no request
        for net in (checkpoint["config"]["net"], checkpoint["hyper_parameters"]["net"]):
            net.update(weights=url, pretrained=True)  # a tampered checkpoint asks for the URL and the hub's weights
        torch.save(checkpoint, path)
        module, _, _ = restore(path, paths={**make_cfg().paths, "data_dir": str(tmp_path / "data")})
    finally:
        stop()
    assert requests == [f"/{weights.name}"]  # nothing more was asked for
    trained = load_checkpoint(path)["state_dict"]
    assert all(torch.equal(v, trained[k]) for k, v in module.state_dict().items())


@pytest.mark.slow  # trains a pretrained backbone end to end: tens of seconds on a CPU
def test_imdb_finetune_trains_on_a_local_model_and_predicts_from_the_checkpoint_alone(make_cfg, tmp_path):
    overrides = provide_task_data("imdb_finetune", tmp_path / "data")
    run = ["trainer.max_epochs=4", "data.batch_size=8", "module.optimizer.lr=3e-3", "net.pooling=mean"]
    run += ["module.finetune.backbone_lr_scale=1.0", "callbacks.histograms=null"]
    result = train(make_cfg("task=imdb_finetune", *run, *overrides))
    assert result.metrics["test/acc"] > 0.75  # sentiment words give the labels away, even to a tiny random BERT
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    state = checkpoint["TextDataModule"]
    assert isinstance(state["tokenizer"], str) and '"WordPiece"' in state["tokenizer"] and state["pad_id"] == 0
    assert checkpoint["config"]["net"]["config"]["model_type"] == "bert"

    shutil.rmtree(tmp_path / "data" / "tiny_bert")  # the checkpoint alone: no model folder, no hub
    texts = "input=['a wonderful superb film',awful boring waste]"
    overrides = [f"ckpt_path={result.best_checkpoint}", texts, f"output={tmp_path / 'p.csv'}"]
    cfg = compose_config(CONFIG_DIR, overrides, output_dir=tmp_path, config_name="predict")
    assert predict(cfg)["prediction"].tolist() == ["pos", "neg"]
    export = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", "format=onnx", f"paths.data_dir={tmp_path / 'data'}"],
        output_dir=tmp_path / "export",
        config_name="export",
    )
    path, difference = export_checkpoint(export)
    assert path.is_file() and difference < 1e-4


@pytest.mark.slow
def test_under_ddp_the_backbone_stays_frozen_then_trains(tmp_path):
    from tests.helpers import run_script

    overrides = provide_task_data("cifar2_finetune", tmp_path / "data")
    weights = torch.load(next(o for o in overrides if o.startswith("net.weights=")).split("=", 1)[1])
    run = tmp_path / "run"
    settings = [
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "data.batch_size=4",
        "callbacks.model_checkpoint.save_top_k=-1",
    ]
    settings += [f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run}"]
    result = run_script(["train.py", "task=cifar2_finetune", *settings, *overrides])
    assert result.returncode == 0, result.stderr[-3000:]
    backbone = [k for k in weights if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    frozen, trained = (load_checkpoint(run / "checkpoints" / f"epoch00{i}.ckpt")["state_dict"] for i in (0, 1))
    assert all(torch.equal(frozen[f"net.backbone.{k}"], weights[k]) for k in backbone)  # epoch 0: as loaded
    assert all(not torch.equal(trained[f"net.backbone.{k}"], weights[k]) for k in backbone)  # epoch 1: trained


@pytest.mark.slow  # trains a pretrained backbone end to end: tens of seconds on a CPU
def test_a_resumed_finetune_run_unfreezes_on_schedule(make_cfg, tmp_path):
    overrides = provide_task_data("cifar2_finetune", tmp_path / "data")
    weights = torch.load(next(o for o in overrides if o.startswith("net.weights=")).split("=", 1)[1])
    overrides += ["module.scheduler=null", "data.batch_size=4"]  # a OneCycleLR is as long as the first run
    first = train(make_cfg("task=cifar2_finetune", "trainer.max_epochs=1", "test=false", *overrides, run="first"))
    last = Path(first.output_dir) / "checkpoints" / "last.ckpt"
    frozen = load_checkpoint(last)["state_dict"]
    backbone = [k for k in weights if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(frozen[f"net.backbone.{k}"], weights[k]) for k in backbone)
    resumed = train(make_cfg("task=cifar2_finetune", "trainer.max_epochs=2", f"ckpt_path={last}", *overrides))
    assert resumed.trainer.current_epoch == 2
    trained = load_checkpoint(last)["state_dict"]  # the resumed run continues in the first run's directory
    same = [k for k in backbone if torch.equal(trained[f"net.backbone.{k}"], weights[k])]
    assert not same, same


@pytest.mark.slow  # two runs of train.py in a subprocess, ~15 s each
@pytest.mark.parametrize(
    "offline", ["HF_HUB_OFFLINE=1", "HF_ENDPOINT=http://127.0.0.1:9"], ids=["offline", "no-network"]
)
@pytest.mark.parametrize("family", ["timm", "transformer"])
def test_pretrained_weights_missing_offline_stop_in_one_line(tmp_path, offline, family):
    import os
    import subprocess
    import sys
    import time

    from tests.datasets import write_image_folder
    from tests.helpers import ROOT

    if family == "timm":
        write_image_folder(tmp_path / "pets", per_class=4)
        args = ["task=images", f"data.root={tmp_path / 'pets'}", "data.val_fraction=0.25", "net=timm"]
        looked_for, provide = "the pretrained weights of resnet18 (timm/resnet18", "net.weights=<a .pth/.safetensors"
    else:
        args = [*provide_task_data("text", tmp_path / "data"), "task=text", "net=transformer"]
        looked_for, provide = "the tokenizer of distilbert-base-uncased", "a folder written by save_pretrained"
    key, value = offline.split("=", 1)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), key: value, "PYTHONUNBUFFERED": "1"}
    env.pop("HF_HUB_CACHE", None)
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "train.py", *args, "net.pretrained=true", *paths, "trainer.max_epochs=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr and "Retry" not in done.stderr + done.stdout
    assert looked_for in errors[0] and f"cache {tmp_path / 'hf' / 'hub'}" in errors[0] and provide in errors[0]
    assert (
        "run once online" in errors[0]
        and ("HF_HUB_OFFLINE=1" if key == "HF_HUB_OFFLINE" else "no network") in errors[0]
    )
    assert time.monotonic() - start < 120  # no retries with back-off
