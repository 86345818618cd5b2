"""Small datasets written in the real on-disk formats, for tests that must not need the real data."""

from pathlib import Path

import numpy as np
import pandas as pd

TITANIC_COLUMNS = [
    "PassengerId",
    "Survived",
    "Pclass",
    "Name",
    "Sex",
    "Age",
    "SibSp",
    "Parch",
    "Ticket",
    "Fare",
    "Cabin",
    "Embarked",
]


def titanic_frame(n: int, seed: int, first_id: int = 1) -> pd.DataFrame:
    """Rows shaped like the Kaggle Titanic CSV; women and first class survive more, as in the real data."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], n, p=[0.65, 0.35])
    pclass = rng.choice([1, 2, 3], n, p=[0.25, 0.2, 0.55])
    title = np.where(
        sex == "female", rng.choice(["Mrs", "Miss"], n), rng.choice(["Mr", "Master", "Dr"], n, p=[0.85, 0.12, 0.03])
    )
    age = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(1, 70, n).round())
    fare = (rng.lognormal(2.5, 0.8, n) * (4 - pclass)).round(2)
    logit = 2.5 * (sex == "female") + 0.9 * (3 - pclass) - 1.6 + rng.normal(0, 0.5, n)
    return pd.DataFrame(
        {
            "PassengerId": np.arange(first_id, first_id + n),
            "Survived": (logit > 0).astype(int),
            "Pclass": pclass,
            "Name": [f"Family{i}, {t}. Given{i}" for i, t in enumerate(title)],
            "Sex": sex,
            "Age": age,
            "SibSp": rng.integers(0, 4, n),
            "Parch": rng.integers(0, 3, n),
            "Ticket": [f"T{i}" for i in range(n)],
            "Fare": fare,
            "Cabin": np.where(rng.random(n) < 0.75, None, [f"C{i}" for i in range(n)]),
            "Embarked": rng.choice(["S", "C", "Q", None], n, p=[0.7, 0.18, 0.1, 0.02]),
        },
        columns=TITANIC_COLUMNS,
    )


def write_titanic(folder: Path, n_train: int = 240, n_test: int = 80) -> Path:
    """Write `folder/train.csv` and `folder/test.csv` in the Titanic layout."""
    folder.mkdir(parents=True, exist_ok=True)
    titanic_frame(n_train, seed=1).to_csv(folder / "train.csv", index=False)
    titanic_frame(n_test, seed=2, first_id=n_train + 1).to_csv(folder / "test.csv", index=False)
    return folder


def mixed_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Numeric and categorical columns with missing values; a 3-class and a continuous target."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, n), rng.uniform(-2, 2, n)
    color = rng.choice(["red", "green", "blue"], n)
    shift = pd.Series(color).map({"red": 1.0, "green": 0.0, "blue": -1.0}).to_numpy()
    score = x1 + shift
    frame = pd.DataFrame(
        {
            "id": [f"row{i}" for i in range(n)],
            "x1": np.where(rng.random(n) < 0.1, np.nan, x1),
            "x2": x2,
            "color": np.where(rng.random(n) < 0.05, None, color),
            "grade": np.digitize(score, [-0.7, 0.7]).astype(int),  # classes 0, 1, 2
            "price": 1000 + 300 * x1 - 150 * x2 + 200 * shift + rng.normal(0, 20, n),
        }
    )
    frame["grade"] = frame["grade"].map({0: "low", 1: "mid", 2: "high"})
    return frame


def seasonal_frame(n: int = 120, seed: int = 0, start: str = "2024-01-01") -> pd.DataFrame:
    """Daily series with a trend and a weekly season: what naive forecasts get wrong."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    weekly = np.array([0, 8, 12, 6, -4, -12, -10])[t % 7]
    return pd.DataFrame(
        {
            "date": pd.date_range(start, periods=n, freq="D").strftime("%Y-%m-%d"),
            "sales": 100 + 0.8 * t + weekly + rng.normal(0, 1.0, n),
            "visits": 300 + 1.5 * t + 2 * weekly + rng.normal(0, 2.0, n),
        }
    )


def covid_like_frame() -> pd.DataFrame:
    """Tab-separated cumulative counts shaped like the COVID-19 file (47 days)."""
    days = np.arange(47)
    daily = np.stack(
        [
            3000 * np.exp(-(((days - 15) / 9) ** 2)) + 20,
            2500 / (1 + np.exp(-(days - 30) / 4)),
            80 * np.exp(-(((days - 20) / 12) ** 2)) + 5,
        ],
        1,
    )
    levels = np.cumsum(daily.round(), axis=0)
    frame = pd.DataFrame(levels, columns=["confirmed_num", "cured_num", "dead_num"])
    frame.insert(0, "date", pd.date_range("2020-01-24", periods=47, freq="D").strftime("%Y-%m-%d"))
    return frame


def provide_task_data(task: str, data_dir: Path) -> list[str]:
    """Write small data for `task` under `data_dir`; return the overrides the task then needs.

    Every task file in conf/task/ needs a function `data_for_<task>(data_dir)` in this module, so that
    "every task" tests cover it: a new task brings its own function, and nothing else here changes.
    """
    write = globals().get(f"data_for_{task}")
    if write is None:
        raise KeyError(f"tests/datasets.py has no data for task {task!r}: add a function data_for_{task}(data_dir)")
    return write(data_dir)


def data_for_linear_regression(data_dir: Path) -> list[str]:
    return []  # generated in memory


def data_for_rings(data_dir: Path) -> list[str]:
    return []  # generated in memory


def data_for_titanic(data_dir: Path) -> list[str]:
    write_titanic(data_dir / "titanic")
    return []


def _mixed_table(data_dir: Path, target: str, drop: str) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    mixed_frame(300).to_csv(data_dir / "mixed.csv", index=False)
    return [
        f"data.train_file={data_dir / 'mixed.csv'}",
        f"data.target={target}",
        "data.id_column=id",
        f"data.drop=[{drop}]",
    ]


def data_for_tabular(data_dir: Path) -> list[str]:
    return _mixed_table(data_dir, target="grade", drop="price")


def data_for_tabular_regression(data_dir: Path) -> list[str]:
    return _mixed_table(data_dir, target="price", drop="grade")


def data_for_covid(data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    covid_like_frame().to_csv(data_dir / "covid-19.csv", sep="\t", index=False)
    return []


def data_for_series(data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    seasonal_frame().to_csv(data_dir / "series.csv", index=False)
    return [f"data.file={data_dir / 'series.csv'}", "data.date_column=date"]


def data_for_cifar2(data_dir: Path) -> list[str]:
    write_image_folder(data_dir / "cifar2")
    return []


def data_for_images(data_dir: Path) -> list[str]:
    write_image_folder(data_dir / "shapes", classes=("red", "blue", "green"))
    return [f"data.root={data_dir / 'shapes'}"]


def data_for_mnist(data_dir: Path) -> list[str]:
    write_fake_mnist(data_dir / "mnist")
    return ["data.download=false"]


def data_for_imdb(data_dir: Path) -> list[str]:
    write_aclimdb(data_dir / "imdb")
    return []


def data_for_cifar2_finetune(data_dir: Path) -> list[str]:
    """ "Pretrained" weights: a random test_resnet's, from a local file."""
    write_image_folder(data_dir / "cifar2")
    weights = write_timm_weights(data_dir / "weights" / "test_resnet.pth")
    return ["net.model_name=test_resnet", "net.pretrained=false", f"net.weights={weights}", "data.input_size=32"]


def data_for_imdb_finetune(data_dir: Path) -> list[str]:
    """A tiny BERT saved with save_pretrained: loaded from its folder."""
    write_aclimdb(data_dir / "imdb")
    return [f"net.model_name={write_tiny_bert(data_dir / 'tiny_bert')}", "data.max_length=64"]


def data_for_text(data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    labels = ["neg", "pos"] * 40
    frame = pd.DataFrame({"label": labels, "text": [review(int(lab == "pos"), rng) for lab in labels]})
    frame.to_csv(data_dir / "reviews.tsv", sep="\t", index=False)
    return [f"data.train_file={data_dir / 'reviews.tsv'}"]


def class_images(n: int, label: int, size: int = 16, seed: int = 0):
    """(n, 3, size, size) uint8 images whose colour depends on the class: learnable in a few steps."""
    import torch

    generator = torch.Generator().manual_seed(seed * 10 + label)
    base = torch.tensor([[200, 40, 40], [40, 60, 200], [40, 180, 60]][label % 3], dtype=torch.float32)
    noise = torch.randint(-30, 30, (n, 3, size, size), generator=generator)
    return (base[None, :, None, None] + noise).clamp(0, 255).to(torch.uint8)


def write_image_folder(root: Path, classes=("airplane", "automobile"), per_class: int = 12, size: int = 16) -> Path:
    """`root/{train,test}/<class>/*.png|jpg` with one grayscale image per class and split."""
    from torchvision.io import write_jpeg, write_png
    from torchvision.transforms.v2 import functional as TF

    for split, count in (("train", per_class), ("test", max(per_class // 2, 2))):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(class_images(count, label, size, seed=split == "test")):
                if i == 0:  # a grayscale file among the colour ones
                    write_png(TF.rgb_to_grayscale(image), str(folder / f"{i}_gray.png"))
                elif i % 2:
                    write_jpeg(image, str(folder / f"{i}.jpg"), quality=95)
                else:
                    write_png(image, str(folder / f"{i}.png"))
    return root


def write_fake_cifar10_archive(folder: Path, per_class: int = 6) -> Path:
    """`cifar-10-python.tar.gz` in CIFAR-10's own format (pickled batches), tiny."""
    import pickle
    import tarfile

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)

    def batch(seed: int) -> dict:
        images = [class_images(per_class, label, size=32, seed=seed) for label in range(10)]
        data = np.concatenate([im.reshape(per_class, -1).numpy() for im in images])
        return {"data": data, "labels": [label for label in range(10) for _ in range(per_class)]}

    for i in range(1, 6):
        (batches / f"data_batch_{i}").write_bytes(pickle.dumps(batch(i)))
    (batches / "test_batch").write_bytes(pickle.dumps(batch(0)))
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    return archive


def write_fake_mnist(root: Path, per_class: int = 6) -> Path:
    """MNIST's raw idx files under `root/MNIST/raw`, as torchvision reads them."""
    import struct

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, seed in (("train", 1), ("t10k", 2)):
        images = np.concatenate([class_images(per_class, d, size=28, seed=seed)[:, 0].numpy() for d in range(10)])
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(labels)) + labels.tobytes())
    return root


POSITIVE = ["great", "wonderful", "loved", "brilliant", "moving", "superb"]
NEGATIVE = ["awful", "boring", "hated", "dull", "terrible", "waste"]
NEUTRAL = ["the", "movie", "film", "plot", "actor", "scene", "was", "and", "a", "it"]


def review(label: int, rng, words: int = 30) -> str:
    """A review whose sentiment words give its label away; some carry HTML line breaks."""
    vocabulary = NEUTRAL * 3 + (POSITIVE if label else NEGATIVE)
    text = " ".join(rng.choice(vocabulary, words))
    return text.capitalize() + ("<br /><br />" + "The End." if rng.random() < 0.3 else ".")


def write_aclimdb(root: Path, per_class: int = 30, archive: bool = True) -> Path:
    """`root/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` plus train/unsup, and its .tar.gz."""
    import tarfile

    rng = np.random.default_rng(0)
    base = root / "aclImdb"
    for split in ("train", "test"):
        for label, name in ((0, "neg"), (1, "pos")):
            folder = base / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (folder / f"{i}_{7 if label else 2}.txt").write_text(review(label, rng), encoding="utf-8")
    (base / "train" / "unsup").mkdir(parents=True, exist_ok=True)
    (base / "train" / "unsup" / "0_0.txt").write_text("unlabelled " * 5, encoding="utf-8")
    (base / "train" / "pos" / "999_8.txt").write_bytes(b"great film, caf\xe9 scene loved it")  # Latin-1, not UTF-8
    if archive:
        with tarfile.open(root / "aclImdb_v1.tar.gz", "w:gz") as tar:
            tar.add(base, arcname="aclImdb")
    return root


def write_timm_weights(path: Path, model_name: str = "test_resnet", seed: int = 0) -> Path:
    """A state dict of a randomly initialised timm model (with its 1000-class classifier), saved to `path`."""
    import timm
    import torch

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(timm.create_model(model_name, pretrained=False).state_dict(), path)
    return path


def write_tiny_bert(folder: Path, vocab_size: int = 200, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with random weights and a WordPiece tokenizer trained on generated
    reviews, both saved with `save_pretrained` into `folder`: a "pretrained model" that needs no hub."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    if (folder / "tokenizer.json").is_file():
        return folder
    rng = np.random.default_rng(seed)
    texts = [review(i % 2, rng) for i in range(200)]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=128)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
