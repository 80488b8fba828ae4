"""Shared fixtures: tiny data sets made by the package itself, and the options of a run that takes seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan_translate.data.builtin import ensure_builtin_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in facades at 32 px: 8 train and 2 test pairs, in both views (aligned/ and unaligned/)."""
    return ensure_builtin_dataset(tmp_path_factory.mktemp("data"), seed=3, size=32, n_train=8, n_test=2)


def tiny_run(model: str, data: Path, checkpoints: Path, name: str, *extra: str) -> list[str]:
    """Command-line options for a run of a few seconds on 32 px images with small networks."""
    view = "aligned" if model == "pix2pix" else "unaligned"
    net_g = "unet_32" if model == "pix2pix" else "resnet_2blocks"
    return ["--model", model, "--dataroot", str(data / view), "--checkpoints_dir", str(checkpoints), "--name", name,
            "--netG", net_g, "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32",
            "--batch_size", "2", "--num_threads", "0", "--n_epochs", "1", "--n_epochs_decay", "2",
            "--print_freq", "1", "--display_freq", "2", "--save_latest_freq", "1000", *extra]


def logged_scalars(run_dir: Path, tag: str) -> list[float]:
    """The values a run logged to TensorBoard under ``tag`` (e.g. "loss/content"), in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = next((run_dir / "logs").rglob("events.out.tfevents.*"))
    board = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    board.Reload()
    return [event.value for event in board.Scalars(tag)]


@pytest.fixture(scope="module")
def one_thread():
    """Runs a module on one thread (``pytestmark = pytest.mark.usefixtures("one_thread")``): for tiny tensors a
    second thread only adds synchronisation (and spins on a busy shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_styles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in style data set at 32 px: 4 content images, 2 images of each style."""
    from gan_translate.data.styles import ensure_builtin_styles

    return ensure_builtin_styles(tmp_path_factory.mktemp("styles"), size=32, n_content=4, per_class=2)


@pytest.fixture
def trained_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The global step of every training step the trainer runs in this test, in order (0-based, as the models see
    it): a resumed run must show the steps after its checkpoint, not a fresh start that a fixed seed would make
    indistinguishable by its weights alone."""
    from gan_translate.engine import trainer

    seen: list[int] = []
    real = trainer.StepContext

    def recording(*args, **kwargs):
        context = real(*args, **kwargs)
        seen.append(context.step)
        return context

    monkeypatch.setattr(trainer, "StepContext", recording)
    return seen
