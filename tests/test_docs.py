"""The guide stays true: README.md, CONTRIBUTING.md, CHANGELOG.md, datasets/README.md and every docs/**/*.md page.

- every relative link and image resolves (and a #fragment names a heading of the page it points to);
- every fenced block names its language, and every command of a shell block starts with a real entry point;
- every `--option` written in a command exists for that command: train.py's for the model named by --model (its
  options dataclass), test.py's and each `python -m gan_translate <command>`'s (their --help, through the public
  ``gan_translate.cli.main``), accelerate launch's and torchrun's own flags before the script, and each datasets/ or
  scripts/ script's parser;
- an `--option` written in backticks in prose exists in one of those parsers;
- no issue numbers or paths into the project's private data folder in the user's text.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import dataclasses
import functools
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted({REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md", REPO / "datasets" / "README.md",
                *(REPO / "docs").rglob("*.md")})

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
OTHER_LANGUAGES = {"text", "python", "yaml", "json", "toml", "ini"}

# The first word of a shell command. python and the launchers are checked further below; the others are tools whose
# options are not this project's.
ENTRY_POINTS = {"python", "accelerate", "torchrun", "gan-translate", "gan-translate-train", "gan-translate-stylize",
                "pip", "git", "cd", "bash", "tensorboard", "srun", "sbatch", "apt-get", "ruff"}
PYTHON_MODULES = {"gan_translate", "pytest"}
SCRIPT = re.compile(r"(datasets|scripts)/[A-Za-z0-9_]+\.py")
TRAIN_SCRIPTS = ("train.py", "test.py")

OPTION = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SUBSTITUTION = [re.compile(r"\$\(\([^()]*\)\)"), re.compile(r"\$\([^()]*\)")]  # $((arithmetic)), $(command)
OPERATORS = {"&&", "||", ";", "|"}


# ----------------------------------------------------------------------------------------------------------------------
# Reading a page
# ----------------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Block:
    language: str
    line: int  # of the opening fence, 1-based
    lines: list[str]


def split_page(text: str) -> tuple[str, list[Block]]:
    """The prose (fenced lines blanked, so that line numbers stay) and the fenced blocks."""
    prose: list[str] = []
    blocks: list[Block] = []
    current: Block | None = None
    fence = ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if current is None and match:
            fence, current = match.group(1), Block(match.group(2).lower(), number, [])
            prose.append("")
        elif current is not None and line.strip().startswith(fence) and not line.strip()[len(fence):].strip():
            blocks.append(current)
            current = None
            prose.append("")
        elif current is not None:
            current.lines.append(line)
            prose.append("")
        else:
            prose.append(line)
    if current is not None:
        blocks.append(current)  # an unclosed fence runs to the end, as markdown renders it
    return "\n".join(prose), blocks


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_page(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose, re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# The parsers' options
# ----------------------------------------------------------------------------------------------------------------------

def options_in_help(text: str) -> set[str]:
    """The --options of an argparse help text: its usage block and its option lines (not options named in prose)."""
    usage, _, rest = text.partition("\n\n")
    found = set(OPTION.findall(usage))
    for line in rest.splitlines():
        if re.match(r"^\s{1,8}-", line):
            found |= set(OPTION.findall(re.split(r"\s{2,}", line.strip())[0]))
    return {f"--{name}" for name in found} | {"--help"}


def _captured(call) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            call()
        except SystemExit:
            pass
    return out.getvalue()


@functools.cache
def command_options(*argv: str) -> frozenset[str]:
    """Options of ``python -m gan_translate <argv...>``, read from its --help as a user would."""
    from gan_translate.cli import main

    text = _captured(lambda: main([*argv, "--help"]))
    assert "usage:" in text, f"python -m gan_translate {' '.join(argv)} --help printed no usage"
    return frozenset(options_in_help(text))


@functools.cache
def model_options(model: str | None) -> frozenset[str]:
    """train.py's options for a model: its options dataclass (None: any model, for a resumed run of unknown model)."""
    from gan_translate.models import MODELS, model_class

    names = [model] if model else sorted(MODELS)
    return frozenset({"--help"} | {f"--{f.name}" for name in names
                                   for f in dataclasses.fields(model_class(name).Options)})


@functools.cache
def launcher_options(launcher: str) -> frozenset[str]:
    if launcher == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        # accelerate's help formatter hides the flags of platforms not named in sys.argv: show it as `accelerate launch
        # --help` shows itself
        argv = sys.argv
        sys.argv = ["accelerate", "launch", "--help"]
        try:
            return frozenset(options_in_help(launch_command_parser().format_help()))
        finally:
            sys.argv = argv
    from torch.distributed.run import get_args_parser

    return frozenset(options_in_help(get_args_parser().format_help()))


@functools.cache
def script_help(script: str, *args: str) -> str:
    """``python datasets/X.py ... --help`` or ``python scripts/X.py ... --help``, run in this process as python runs a
    script (its folder first on the path)."""
    path = REPO / script
    argv, path_before = sys.argv, list(sys.path)
    sys.argv = [str(path), *args, "--help"]
    sys.path[:0] = [str(path.parent), str(REPO)]
    try:
        text = _captured(lambda: runpy.run_path(str(path), run_name="__main__"))
    finally:
        sys.argv, sys.path[:] = argv, path_before
    assert "usage:" in text, f"python {script} {' '.join(args)} --help printed no usage"
    return text


def script_options(script: str, *sub: str) -> frozenset[str]:
    """Options of a datasets/ or scripts/ script (and of one of its subcommands)."""
    return frozenset(options_in_help(script_help(script, *sub)))


def script_subcommand(script: str, args: list[str]) -> tuple[str, ...]:
    """A script with subcommands ({a,b,...} in its usage) is checked against the subcommand's parser."""
    if not args or args[0].startswith("-"):
        return ()
    choices = re.search(r"\{([\w,-]+)\}", script_help(script).partition("\n\n")[0])
    return (args[0],) if choices and args[0] in choices.group(1).split(",") else ()


def all_options(pages_commands: list[tuple[str, list[str]]]) -> frozenset[str]:
    """Every option of every parser the guide's commands use (for options named in prose)."""
    from gan_translate.cli import COMMANDS_HELP, main

    found = set(model_options(None)) | launcher_options("accelerate") | launcher_options("torchrun")
    commands = re.findall(r"^  (\w+)\s", COMMANDS_HELP, re.MULTILINE)
    for command in commands:
        if command == "import":
            sources = _captured(lambda: main(["import", "--help"]))
            for source in re.findall(r"^  (\w+)\s", sources, re.MULTILINE):
                found |= command_options("import", source)
        elif command != "train":
            found |= command_options(command)
    found |= command_options("bench", "--data")
    if _captured(lambda: main(["--version"])).startswith("gan_translate "):  # the command's own option
        found.add("--version")
    for script, sub in pages_commands:
        found |= script_options(script, *sub)
    return frozenset(found)


# ----------------------------------------------------------------------------------------------------------------------
# Shell blocks
# ----------------------------------------------------------------------------------------------------------------------

def shell_commands(lines: list[str]) -> list[list[str]]:
    """The commands of a shell block, as word lists: continuations joined, comments dropped, $(...) left out, split at
    &&, ||, ; and |, and the string of ``bash -c`` read as commands too."""
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    commands: list[list[str]] = []
    for line in joined:
        if not line or line.startswith("#"):
            continue
        for pattern in SUBSTITUTION:
            line = pattern.sub("SUBSTITUTED", line)
        words = shlex.split(line.replace("\\$", "$"), comments=True)
        current: list[str] = []
        for word in words + [";"]:
            if word in OPERATORS:
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    out = []
    for words in commands:
        while words and ASSIGNMENT.match(words[0]):
            words = words[1:]
        if not words:
            continue  # an assignment alone
        out.append(words)
        if "bash" in words and "-c" in words[words.index("bash"):]:
            inner = words.index("-c", words.index("bash")) + 1
            if inner < len(words):
                out.extend(shell_commands([words[inner]]))
    return out


def check_options(written: list[str], known: frozenset[str], what: str) -> list[str]:
    wrong = []
    for word in written:
        if word.startswith("--") and len(word) > 2:
            name = word.split("=", 1)[0].strip("[]")
            if name not in known:
                wrong.append(f"{name} is not an option of {what}")
    return wrong


def check_train(args: list[str], what: str) -> list[str]:
    model = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--model"), None)
    model = model or next((a.split("=", 1)[1] for a in args if a.startswith("--model=")), None)
    if model is None:  # a resumed run or a --config file names its own model; else train.py's default
        model = None if any(a.split("=")[0] in ("--continue_train", "--config") for a in args) else "cyclegan"
    from gan_translate.models import MODELS

    if model is not None and model not in MODELS:
        return [f"--model {model} is not a model (choose from {', '.join(sorted(MODELS))})"]
    return check_options(args, model_options(model), f"{what} --model {model}" if model else what)


def check_gan_translate(args: list[str]) -> list[str]:
    from gan_translate.cli import COMMANDS_HELP

    if not args:
        return []
    sub = args[0]
    commands = re.findall(r"^  (\w+)\s", COMMANDS_HELP, re.MULTILINE)
    if sub in ("--help", "-h", "--version"):
        return []
    if sub not in commands:
        return [f"python -m gan_translate {sub}: no such command (choose from {', '.join(commands)})"]
    if sub == "train":
        return check_train(args[1:], "python -m gan_translate train")
    if sub == "import":
        if len(args) < 2 or args[1].startswith("-"):
            return check_options(args[1:], frozenset({"--help"}), "python -m gan_translate import")
        return check_options(args[2:], command_options("import", args[1]), f"python -m gan_translate import {args[1]}")
    if sub == "bench" and "--data" in args:
        return check_options(args[1:], command_options("bench", "--data"), "python -m gan_translate bench --data")
    return check_options(args[1:], command_options(sub), f"python -m gan_translate {sub}")


def check_launched(launcher: str, words: list[str]) -> list[str]:
    """``accelerate launch [flags] train.py ...`` / ``torchrun [flags] train.py ...``."""
    start = 2 if launcher == "accelerate" else 1
    if launcher == "accelerate" and (len(words) < 2 or words[1] != "launch"):
        return [f"accelerate {' '.join(words[1:2])}: only `accelerate launch` is an entry point here"]
    script = next((i for i, w in enumerate(words) if w in TRAIN_SCRIPTS), None)
    if script is None:
        return [f"{launcher} launches neither train.py nor test.py"]
    problems = check_options(words[start:script], launcher_options(launcher), f"{' '.join(words[:start])}")
    if words[script] == "train.py":
        return problems + check_train(words[script + 1:], f"{launcher} ... train.py")
    return problems + check_options(words[script + 1:], command_options("test"), "test.py")


def check_command(words: list[str], scripts_used: list[tuple[str, list[str]]]) -> list[str]:
    first = words[0]
    if first not in ENTRY_POINTS:
        allowed = ", ".join(sorted(ENTRY_POINTS))
        return [f"'{first}' is not an entry point of this project or an allowed tool ({allowed})"]
    if first == "python":
        if len(words) < 2:
            return ["python without a script"]
        if words[1] == "-m":
            module = words[2] if len(words) > 2 else ""
            if module not in PYTHON_MODULES:
                return [f"python -m {module}: not one of {', '.join(sorted(PYTHON_MODULES))}"]
            return check_gan_translate(words[3:]) if module == "gan_translate" else []
        if words[1] == "train.py":
            return check_train(words[2:], "train.py")
        if words[1] == "test.py":
            return check_options(words[2:], command_options("test"), "test.py")
        if SCRIPT.fullmatch(words[1]) and (REPO / words[1]).is_file():
            sub = script_subcommand(words[1], words[2:])
            scripts_used.append((words[1], list(sub)))
            return check_options(words[2:], script_options(words[1], *sub), f"python {words[1]} {' '.join(sub)}")
        return [f"python {words[1]}: not train.py, test.py, -m gan_translate, or a script under datasets/ or scripts/"]
    if first in ("accelerate", "torchrun"):
        return check_launched(first, words)
    if first == "gan-translate":
        return check_gan_translate(words[1:])
    if first == "gan-translate-train":
        return check_train(words[1:], "gan-translate-train")
    if first == "gan-translate-stylize":
        return check_gan_translate(["stylize", *words[1:]])
    return []


# ----------------------------------------------------------------------------------------------------------------------
# A page's problems
# ----------------------------------------------------------------------------------------------------------------------

def link_problems(path: Path, text: str) -> list[str]:
    prose, _ = split_page(text)
    problems = []
    targets = [(m.group(1), m.start()) for m in LINK.finditer(prose)]
    targets += [(m.group(1), m.start()) for m in REFERENCE_LINK.finditer(prose)]
    for target, offset in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}:{line_of(prose, offset)}"
        if not resolved.exists():
            problems.append(f"{where}: link to {target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{where}: link to {target}: no heading #{fragment} in {resolved.name}")
    return problems


def command_problems(path: Path, text: str, scripts_used: list[tuple[str, list[str]]]) -> list[str]:
    _, blocks = split_page(text)
    problems = []
    for block in blocks:
        where = f"{path.relative_to(REPO)}:{block.line}"
        if not block.language:
            problems.append(f"{where}: a fenced block without a language (bash, python, text, ...)")
        elif block.language == "python":
            try:
                ast.parse("\n".join(block.lines))
            except SyntaxError as err:
                problems.append(f"{where}: python block does not parse: {err}")
        elif block.language in SHELL_LANGUAGES:
            try:
                commands = shell_commands(block.lines)
            except ValueError as err:  # unbalanced quotes
                problems.append(f"{where}: {err}")
                continue
            for words in commands:
                problems += [f"{where}: `{' '.join(words)[:80]}`: {p}" for p in check_command(words, scripts_used)]
        elif block.language not in OTHER_LANGUAGES:
            problems.append(f"{where}: unknown block language '{block.language}'")
    return problems


def prose_option_problems(path: Path, text: str, known: frozenset[str]) -> list[str]:
    prose, _ = split_page(text)
    problems = []
    for match in INLINE_CODE.finditer(prose):
        for name in OPTION.findall(match.group(2)):
            if f"--{name}" not in known:
                problems.append(f"{path.relative_to(REPO)}:{line_of(prose, match.start())}: --{name} is an option of "
                                "no command")
    return problems


# ----------------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------------

def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_links_and_images_resolve(page: Path) -> None:
    assert link_problems(page, page.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_start_with_entry_points_and_use_real_options(page: Path) -> None:
    assert command_problems(page, page.read_text(encoding="utf-8"), []) == []


def test_options_named_in_prose_exist() -> None:
    used: list[tuple[str, list[str]]] = []
    for page in PAGES:
        command_problems(page, page.read_text(encoding="utf-8"), used)
    known = all_options(sorted({(s, tuple(sub)) for s, sub in used}))  # type: ignore[arg-type]
    problems = [p for page in PAGES for p in prose_option_problems(page, page.read_text(encoding="utf-8"), known)]
    assert problems == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_user_text_has_no_issue_numbers_or_private_paths(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"\bissues?\s+#?\d+", text, re.IGNORECASE), \
        "issue numbers belong in the tracker, not the guide"
    assert "shared/data" not in text, "name the data set and its download command instead of a private path"


def test_readme_is_a_guide() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move details to docs/"


def test_checker_catches_mistakes(tmp_path: Path) -> None:
    """The checks can fail: a made-up option, an option of another model, a wrong launcher flag, a made-up entry
    point, a broken link and anchor, an unknown option in prose."""
    page = REPO / "docs" / "_made_up.md"  # resolved relative to docs/, never written
    text = "\n".join([
        "See [training](training.md#no-such-heading), [gone](missing.md) and ![img](nope.png).",
        "Use `--made_up_option` with care.",
        "```bash",
        "python train.py --model pix2pix --made_up_option 3",
        "accelerate launch --num_procs 2 train.py --model cyclegan --lambda_L1 5",
        "python test.py --name x --lambda_A 1",
        "python -m gan_translate stylize --content a.jpg --style b.jpg --made_up",
        "make_it_so --now",
        "```",
        "```",
        "no language",
        "```",
    ])
    commands = command_problems(page, text, [])
    assert any("--made_up_option is not an option of train.py --model pix2pix" in p for p in commands)
    assert any("--num_procs is not an option of accelerate launch" in p for p in commands)
    assert any("--lambda_L1 is not an option of accelerate ... train.py --model cyclegan" in p for p in commands)
    assert any("--lambda_A is not an option of test.py" in p for p in commands)
    assert any("--made_up is not an option of python -m gan_translate stylize" in p for p in commands)
    assert any("'make_it_so' is not an entry point" in p for p in commands)
    assert any("without a language" in p for p in commands)
    assert len(commands) == 7, commands
    links = link_problems(page, text)
    assert any("no heading #no-such-heading" in p for p in links)
    assert any("missing.md: no such file" in p for p in links)
    assert any("nope.png: no such file" in p for p in links)
    prose = prose_option_problems(page, text, model_options(None))
    assert prose == ["docs/_made_up.md:2: --made_up_option is an option of no command"]
    # and the real options pass
    block = "```bash\npython train.py --model pix2pix --lambda_L1 5 --netG unet_64\n```"
    assert command_problems(page, block, []) == []


def test_version_license_changelog() -> None:
    """setup.cfg reads the version from the package; the changelog has an entry for it; the licence file matches."""
    import gan_translate

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["version"].strip() == "attr: gan_translate.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", gan_translate.__version__)
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert f"## [{gan_translate.__version__}]" in changelog
    assert setup["metadata"]["license"].strip() == "BSD-3-Clause"
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("BSD 3-Clause License")
