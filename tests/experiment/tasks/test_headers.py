"""The pieces the tasks share: the table header built from a task's title and "trained"
sentence (:func:`make_table_header`), and ``from_config`` on :class:`LoadedTask`."""

from __future__ import annotations

from dataclasses import dataclass

from labelsmooth.experiment.config import TrainConfig
from labelsmooth.experiment.tasks import get_task
from labelsmooth.experiment.tasks.headers import make_table_header, table_sentence
from labelsmooth.experiment.tasks.image import ImageClassification, prepare_data
from labelsmooth.experiment.tasks.image_metrics import table_header
from labelsmooth.experiment.tasks.lm import LM_TRAIN, LanguageModel, prepare_text
from labelsmooth.experiment.tasks.registry import LoadedTask

TAIL = (
    "Training: 2 runs × 11 s on 2 CPU threads, as recorded when each run trained; this "
    "invocation took 1.0 min of wall time (data and evaluation included; runs already in the "
    "output folder are reused, not retrained)."
)


def _records(config: dict, sizes: dict) -> list[dict]:
    return [
        {
            "config": config,
            "sizes": sizes,
            "seed": s,
            "seconds": 10.0 + 2 * s,
            "num_parameters": 1234,
        }
        for s in (0, 1)
    ]


def test_make_table_header_is_table_sentence_of_the_tasks_parts():
    rs = _records({"epochs": 3, "num_threads": 2}, {"n": 7})
    header = make_table_header(
        lambda dataset, regime: f"{dataset}/{regime}",
        lambda cfg, sizes: f"{cfg['epochs']} epochs, {sizes['n']} things.",
    )
    expected = table_sentence("d/r", "M", rs, "3 epochs, 7 things.", 60.0, 2)
    assert header("d", "r", rs, "M", 60.0) == expected
    assert expected.startswith("**d/r**: M, 1,234 parameters; 3 epochs, 7 things. Mean ± std")


def test_image_header_text():
    rs = _records({"epochs": 5, "num_threads": 2}, {"train": 10000, "val": 5000, "test": 10000})
    assert table_header("fashion-mnist", "short", rs, "ResNet-14 (w8)", 60.0) == (
        "**Fashion-MNIST, short regime**: ResNet-14 (w8), 1,234 parameters; 5 epochs on a "
        "10,000-image stratified training subset; temperature fitted on 5,000 held-out images; "
        f"test 10,000 images. Mean ± std over 2 seeds (0, 1). {TAIL}"
    )
    assert get_task("image").table_header is table_header


def test_lm_header_text():
    cfg = {**LM_TRAIN.to_dict(), "epochs": 1, "batch_size": 32, "lr": 0.5}
    sizes = {"train_sequences": 40, "train_tokens": 5000, "test_tokens": 1200}
    header = get_task("lm").table_header("shakespeare", "default", _records(cfg, sizes), "T", 60.0)
    assert header == (
        "**Shakespeare (character level)**: T, 1,234 parameters; 1 epoch of 40 sequences (5,000 "
        "tokens), batch 32, SGD lr 0.5; test 1,200 tokens of held-out plays. Mean ± std over 2 "
        f"seeds (0, 1). {TAIL}"
    )


def test_a_header_without_num_threads_names_no_threads():
    rs = _records({"epochs": 1}, {"train": 1, "val": 0, "test": 2})
    assert " s, as recorded" in table_header("mnist", "fitted", rs, "MLP", 0.0)


def test_from_config_builds_the_task_on_what_its_loader_prepared():
    calls = []

    @dataclass
    class Toy(LoadedTask[str]):
        load_data = staticmethod(lambda config, *, log=print: calls.append(log) or config.dataset)

    config = TrainConfig(dataset="mnist")
    task = Toy.from_config(config, log=None)
    assert isinstance(task, Toy) and task.config is config and task.data == "mnist"
    assert calls == [None]


def test_the_tasks_name_their_loaders():
    assert ImageClassification.load_data is prepare_data
    assert LanguageModel.load_data is prepare_text
