"""The contract every registered model keeps, checked for each name in the registry (``gan_translate.models.MODELS``):
a model registered tomorrow is covered without a line here.

For each model, from its quick preset (options/<model>_quick.yaml) at tiny sizes, on the data its own
``dataset_mode`` reads: train a few steps through train.py's entry point and save; stop half-way and
``--continue_train`` to the same step -- the resumed process must run only the remaining steps and end with the
straight run's weights, bit for bit; load the run for inference and translate an odd-sized image; export the generator
to ONNX (or refuse with one line, for a model that needs a second input).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gan_translate.cli import train_main
from gan_translate.config import model_yaml_files
from gan_translate.engine.checkpoint import find_checkpoint, load_state
from gan_translate.errors import UserError
from gan_translate.export import export_graph, export_onnx
from gan_translate.inference import load_model, load_translator
from gan_translate.models import MODELS, model_class

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

# Sizes that make any model small, each applied where the model has the option (the rest is its quick preset).
TINY = {"ngf": 8, "ndf": 8, "n_blocks": 1, "z_dim": 8, "fc_dim": 16, "num_patches": 32, "vgg_weights": "random",
        "load_size": 36, "crop_size": 32, "batch_size": 2, "max_dataset_size": 4, "epoch_size": 4, "num_threads": 0,
        "num_cpu_threads": 1, "print_freq": 1, "display_freq": 2, "save_latest_freq": 1000}
STEPS, HALF = 4, 2
ODD = (53, 37)  # width, height: no stride divides either


def data_root(mode: str, tiny_data: Path, tiny_styles: Path) -> Path:
    """The tiny data set of a dataset_mode (the layouts of data/datasets.py and data/styles.py); single: one folder
    of images, the A side of the unaligned view."""
    roots = {"aligned": tiny_data / "aligned", "unaligned": tiny_data / "unaligned",
             "single": tiny_data / "unaligned" / "trainA", "styles": tiny_styles}
    if mode not in roots:
        pytest.fail(f"the contract test has no tiny data set for dataset_mode {mode!r}: add one to data_root")
    return roots[mode]


def run_argv(name: str, root: Path, checkpoints: Path, run: str, *extra: str) -> list[str]:
    cls = model_class(name)
    known = {f.name for f in fields(cls.Options)}
    quick = [str(p) for p in model_yaml_files(name, quick=True)[1:]]
    argv = ["--model", name, "--dataroot", str(root), "--checkpoints_dir", str(checkpoints), "--name", run,
            *(["--config", quick[0]] if quick else [])]
    for key, value in TINY.items():
        if key in known:
            argv += [f"--{key}", str(value)]
    return [*argv, *extra]


def dataset_mode(name: str) -> str:
    """The model's dataset_mode after its YAML files (what a run of it reads)."""
    from gan_translate.config import model_defaults

    cls = model_class(name)
    default = next(f.default for f in fields(cls.Options) if f.name == "dataset_mode")
    return model_defaults(cls.Options, name, {}, quick=True).get("dataset_mode", default)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return {f"{f.stem}.{k}": v for f in sorted(ckpt.glob("net_*.safetensors")) for k, v in load_file(str(f)).items()}


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name: str, tiny_data: Path, tiny_styles: Path, tmp_path: Path,
                        trained_steps: list[int]) -> None:
    cls = model_class(name)
    root = data_root(dataset_mode(name), tiny_data, tiny_styles)

    # build, train, save
    assert train_main(run_argv(name, root, tmp_path, "straight", "--max_steps", str(STEPS))) == 0
    assert trained_steps == list(range(STEPS))
    ckpt = find_checkpoint(tmp_path / "straight")
    assert load_state(ckpt)["progress"]["step"] == STEPS
    straight = weights(ckpt)
    assert {f"net_{key}" for key in cls.inference_nets} <= {k.split(".")[0] for k in straight}

    # stop half-way, resume: only the remaining steps run, and they end where the straight run ended
    trained_steps.clear()
    assert train_main(run_argv(name, root, tmp_path, "resumed", "--max_steps", str(HALF))) == 0
    assert trained_steps == list(range(HALF))
    half = weights(find_checkpoint(tmp_path / "resumed"))
    trained_steps.clear()
    assert train_main(run_argv(name, root, tmp_path, "resumed", "--max_steps", str(STEPS), "--continue_train")) == 0
    assert trained_steps == list(range(HALF, STEPS)), "the resumed run did not start at its checkpoint"
    resumed_ckpt = find_checkpoint(tmp_path / "resumed")
    assert load_state(resumed_ckpt)["progress"] == load_state(ckpt)["progress"]
    resumed = weights(resumed_ckpt)
    assert resumed.keys() == straight.keys()
    assert not all(torch.equal(half[k], resumed[k]) for k in half), "the resumed run did not train"
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), f"{key} differs after resume"

    # load for inference: the checkpoint's weights, and an odd-sized image translated
    model, options, _ = load_model(tmp_path / "straight", device="cpu", eval_mode=True)
    for key in cls.inference_nets:
        for param, value in model.nets[key].state_dict().items():
            assert torch.equal(value, straight[f"net_{key}.{param}"]), f"{key}.{param} not loaded"
    translator = load_translator(tmp_path / "straight", preprocess="none", device="cpu")
    style = {"style": picture(2, (40, 32))} if cls.needs_style else {}
    output = translator(picture(1, ODD), **style)
    assert output.mode in ("RGB", "L") and min(output.size) > 0
    if not hasattr(model, "sample"):  # models decoding from a fixed-size code resize to their networks' size
        assert output.size == ODD

    # export: the graph follows the input's size, or a one-line refusal for a model that is not one generator
    if cls.needs_style or not cls.translates_with_one_net:
        with pytest.raises(UserError, match=r"ONNX export covers one-(input|network) generators") as refusal:
            export_onnx(tmp_path / "straight", tmp_path / "g.onnx")
        assert "\n" not in str(refusal.value) and not (tmp_path / "g.onnx").exists()
        return
    onnx_file = export_onnx(tmp_path / "straight", tmp_path / "g.onnx")
    assert onnx_file.is_file()
    ort = pytest.importorskip("onnxruntime")
    net = export_graph(model, cls.inference_nets[0]).eval()
    x = np.random.default_rng(3).uniform(-1, 1, (1, options.input_nc, *ODD[::-1])).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(onnx_file)).run(None, {"image": x})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
