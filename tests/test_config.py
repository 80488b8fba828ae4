"""Options: YAML + command line resolution, and one-line errors (exit code 2, no traceback) for every bad option."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from gan_translate import config
from gan_translate.cli import parse_train_options, train_main
from gan_translate.errors import UserError
from gan_translate.models import MODELS, model_class
from tests.conftest import REPO


def test_paper_defaults_come_from_the_model_yaml() -> None:
    p2p = parse_train_options(["--model", "pix2pix", "--dataroot", "/data/facades"])
    assert (p2p.netG, p2p.norm, p2p.gan_mode, p2p.pool_size, p2p.lambda_L1) == ("unet_256", "batch", "vanilla", 0, 100)
    assert (p2p.dataset_mode, p2p.load_size, p2p.crop_size, p2p.no_dropout) == ("aligned", 286, 256, False)
    cyc = parse_train_options(["--model", "cyclegan", "--dataroot", "/data/h2z"])
    assert (cyc.netG, cyc.norm, cyc.gan_mode, cyc.pool_size, cyc.no_dropout) == ("resnet_9blocks", "instance",
                                                                                 "lsgan", 50, True)
    assert (cyc.lambda_A, cyc.lambda_B, cyc.lambda_identity) == (10, 10, 0.5)
    assert cyc.name == "cyclegan_h2z"


def test_no_dataroot_uses_the_quick_preset() -> None:
    quick = parse_train_options(["--model", "cyclegan"])
    assert (quick.crop_size, quick.netG, quick.name) == (64, "resnet_6blocks", "cyclegan_builtin")


def test_precedence_cli_over_config_over_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "my.yaml"
    cfg.write_text("model: pix2pix\nlambda_L1: 50\nngf: 16\n")
    o = parse_train_options(["--config", str(cfg), "--dataroot", "d", "--ngf", "8", "--no_flip"])
    assert (o.model, o.lambda_L1, o.ngf, o.no_flip, o.netG) == ("pix2pix", 50.0, 8, True, "unet_256")
    assert parse_train_options(["--model", "pix2pix", "--dataroot", "d", "--no_flip", "false"]).no_flip is False


@pytest.mark.parametrize("argv, message", [
    (["--lamda_L1", "5"], "unknown option --lamda_L1 (did you mean --lambda_L1?)"),
    (["--lr", "fast"], "option --lr: expected a number, got 'fast'"),
    (["--batch_size", "2.5"], "option --batch_size: expected an integer, got '2.5'"),
    (["--norm", "layer"], "option --norm: 'layer' is not one of instance, batch, none"),
    (["--netG", "resnet"], "option --netG: 'resnet' is not resnet_<k>blocks or unet_<N>"),
    (["--netG", "unet_100"], "option --netG: unet size 100 must be a power of two >= 32"),
    (["--batch_size", "0"], "option --batch_size: 0 is below the minimum 1"),
    (["--no_flip", "maybe"], "option --no_flip: expected true or false, got 'maybe'"),
    (["--load_size", "100", "--crop_size", "128"], "option --crop_size: 128 is larger than --load_size 100"),
    (["--model", "stylegan"], "option --model: unknown model 'stylegan'"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_options_are_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UserError) as err:
        parse_train_options(["--model", "pix2pix", "--dataroot", "d", *argv] if argv[0] != "--model"
                            else [*argv, "--dataroot", "d"])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_config_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: 0.1\nngf: [1, 2\n")
    with pytest.raises(UserError, match=r"config file .*broken.yaml line \d+: invalid YAML"):
        parse_train_options(["--config", str(broken)])
    with pytest.raises(UserError, match="config file not found: .*missing.yaml"):
        parse_train_options(["--config", str(tmp_path / "missing.yaml")])
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: cyclegan\nlambda_idt: 1\n")
    with pytest.raises(UserError, match=r"unknown option --lambda_idt in .*typo.yaml \(did you mean --lambda_identity"):
        parse_train_options(["--config", str(typo)])


def test_continue_without_a_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="option --continue_train: no run to resume at"):
        parse_train_options(["--model", "pix2pix", "--dataroot", "d", "--checkpoints_dir", str(tmp_path),
                             "--continue_train"])


def test_identity_loss_needs_equal_channels() -> None:
    with pytest.raises(UserError, match="option --lambda_identity"):
        parse_train_options(["--model", "cyclegan", "--dataroot", "d", "--input_nc", "1"])
    assert parse_train_options(["--model", "cyclegan", "--dataroot", "d", "--input_nc", "1",
                                "--lambda_identity", "0"]).input_nc == 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_yaml_is_valid(name: str) -> None:
    cls = model_class(name)
    for path in config.model_yaml_files(name, quick=True):
        config.load_options(cls.Options, path)  # raises on an unknown key or a bad value


def test_train_py_exit_code_and_single_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--model", "pix2pix", "--ngf", "-3"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: option --ngf: -3 is below the minimum 1"
    assert not (tmp_path / "checkpoints").exists()  # nothing half written


def test_missing_dataroot_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere"
    assert train_main(["--model", "pix2pix", "--dataroot", str(missing), "--checkpoints_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(missing) in err and "\n" not in err
    assert not (tmp_path / "pix2pix_nowhere").exists()


# ---- --help and the command line ---------------------------------------------------------------------------------


def _shown_default(text: str) -> str | None:
    """The value in an option's '(default: X)' or '(default: X; quick preset: Y)'."""
    if "(default: " not in text:
        return None
    return text.split("(default: ", 1)[1].split(";", 1)[0].rsplit(")", 1)[0]


def _quick_note(text: str) -> str | None:
    return text.split("quick preset: ", 1)[1].rsplit(")", 1)[0] if "quick preset: " in text else None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_help_shows_the_defaults_the_model_uses(name: str) -> None:
    """`train.py --model NAME --help`: each option's default is the value a run with --dataroot gets (the model's
    YAML over the shared defaults), and where the quick preset (no --dataroot) differs, its value is noted."""
    cls = model_class(name)
    parser = config.model_help_parser(cls.Options, name, ["--model", name, "--help"])
    with_data = config.resolve(cls.Options, name, ["--dataroot", "somewhere"]).to_dict()
    quick = config.resolve(cls.Options, name, []).to_dict()
    explained = {f.name for f in fields(cls.Options) if "(default:" in f.metadata.get("help", "")}
    checked = 0
    for action in parser._actions:
        key = action.dest
        if key not in with_data or not action.help or key in explained:
            continue
        assert action.help.count("(default:") <= 1, action.help
        shown = _shown_default(action.help)
        if shown is None:
            continue
        assert shown == str(with_data[key]), (key, action.help)
        note = _quick_note(action.help)
        assert note == (str(quick[key]) if quick[key] != with_data[key] else None), (key, action.help)
        checked += 1
    assert checked > 30


def test_pix2pix_help_names_its_paper_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        parse_train_options(["--model", "pix2pix", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, value in (("netG", "unet_256; quick preset: unet_64"), ("norm", "batch"), ("gan_mode", "vanilla"),
                          ("dataset_mode", "aligned"), ("pool_size", "0")):
        assert f"--{option} " in text and f"(default: {value})" in text, option
    assert "(default: resnet_9blocks)" not in text and "(default: lsgan)" not in text
    assert "options/pix2pix_quick.yaml" in text  # the epilog says when the quick preset applies


@pytest.mark.parametrize("command", [["train"], ["test"], ["export"], ["bench"], ["bench", "--data"], ["fid"],
                                     ["stylize"], ["import", "reference"], ["import", "adain"]])
def test_help_is_plain_text_with_each_default_once(command: list[str], capsys: pytest.CaptureFixture) -> None:
    from gan_translate.cli import main

    try:
        code = main([*command, "--help"])
    except SystemExit as done:  # argparse's own --help
        code = done.code
    assert code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "``" not in out and ":class:" not in out
    for entry in " ".join(out.split()).split(" --")[1:]:
        assert entry.count("(default:") <= 1, entry


def test_fid_positional_arguments_are_described(capsys: pytest.CaptureFixture) -> None:
    from gan_translate.cli import main

    with pytest.raises(SystemExit):
        main(["fid", "--help"])
    section = capsys.readouterr().out.split("positional arguments:", 1)[1].split("options:", 1)[0]
    lines = section.splitlines()
    for name in ("dir_a", "dir_b"):
        line = next(line for line in lines if line.strip().startswith(name))
        assert len(line.split(name, 1)[1].strip()) > 10, line


def test_version(capsys: pytest.CaptureFixture) -> None:
    from gan_translate import __version__
    from gan_translate.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gan_translate {__version__}"


def test_every_command_parses_with_the_one_parser_class() -> None:
    """A mistake on any command line is one line and exit code 2 because every parser is config.CommandParser; and
    config's private helpers stay inside config (its public API is what the other modules use)."""
    import ast

    package = REPO / "gan_translate"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and path.name != "config.py":
                bases = [ast.unparse(b) for b in node.bases]
                assert "argparse.ArgumentParser" not in bases, f"{path}: {node.name} subclasses ArgumentParser"
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "argparse.ArgumentParser":
                raise AssertionError(f"{path}:{node.lineno}: a plain argparse.ArgumentParser (use CommandParser)")
            if path.name != "config.py" and isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and ast.unparse(node.value) == "config" and not node.attr.startswith("__"):
                raise AssertionError(f"{path}:{node.lineno}: config.{node.attr} is private to config")
            if isinstance(node, ast.ImportFrom) and node.module == "gan_translate.config":
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path}:{node.lineno}: imports config's private {private}"
    parser = config.CommandParser(prog="x")
    parser.add_argument("--n", type=int)
    with pytest.raises(UserError, match="argument --n: invalid int value: 'a'"):
        parser.parse_args(["--n", "a"])
