"""Every command's options are one typed dataclass: the same fields are its flags (types and
choices from the annotations) and its config file's keys; flags win over the file."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from sbert import cli
from sbert.errors import ConfigError
from sbert.options import add_flags, from_args, option

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Options:
    name: str | None = option("a required string", required=True)
    first: str | None = option("a positional", positional=True)
    size: int = option("from 1 to 65535", 4, minimum=1, maximum=65535)
    rate: float | None = option("a float")
    mode: Literal["a", "b"] = option("a choice", "a")
    on: bool = option("a switch", False)
    files: list[str] = option("repeatable", default_factory=list)
    weights: dict[str, float] = option("by name", default_factory=dict)
    k: int = option("a one-letter option is a short flag", 10)


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_flags(parser, Options)
    return from_args(Options, parser.parse_args(argv))


def test_flags_come_from_the_types():
    o = parse(["--name", "x", "pos", "--size", "2", "--rate", "0.5", "--mode", "b", "--on",
               "--files", "f1", "--files", "f2", "--weights", "a=1,b=0.5", "-k", "3"])  # fmt: skip
    assert o == Options("x", "pos", 2, 0.5, "b", True, ["f1", "f2"], {"a": 1.0, "b": 0.5}, 3)
    assert parse(["--name", "x"]) == Options("x")
    with pytest.raises(argparse.ArgumentError):
        parse(["--name", "x", "--mode", "c"])
    with pytest.raises(argparse.ArgumentError):
        parse(["--name", "x", "--weights", "a:1"])


def test_required_range_and_finite_are_one_line_errors():
    with pytest.raises(ConfigError, match="^--name is required$"):
        parse([])
    with pytest.raises(ConfigError, match="^--size must be at least 1, not 0$"):
        parse(["--name", "x", "--size", "0"])
    with pytest.raises(ConfigError, match="^--size must be at most 65535, not 70000$"):
        parse(["--name", "x", "--size", "70000"])
    for bad in ("inf", "-inf", "nan"):  # no float option means anything by these
        with pytest.raises(ConfigError, match=f"^--rate must be a finite number, not {bad}$"):
            parse(["--name", "x", f"--rate={bad}"])


def test_a_config_file_sets_the_same_fields_and_flags_win(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('name = "from file"\nsize = 7\nweights = { a = 2.0 }\nmode = "b"\n')
    o = parse(["--config", str(config), "--size", "3"])
    assert (o.name, o.size, o.weights, o.mode) == ("from file", 3, {"a": 2.0}, "b")
    config.write_text("sise = 7\n")
    with pytest.raises(ConfigError, match="c.toml: unknown setting.s. sise"):
        parse(["--config", str(config)])
    config.write_text('size = "7"\n')
    with pytest.raises(ConfigError, match="size = '7' is not a whole number"):
        parse(["--config", str(config)])
    config.write_text('\ufeffname = "x"\nsize = 7\n', encoding="utf-8")  # a BOM: Windows editors
    assert parse(["--config", str(config)]).size == 7


@pytest.mark.parametrize(
    "line, words",
    [
        ("size = true", "size = True is not a whole number"),  # TOML's bool is no number
        ("size = 1.5", "size = 1.5 is not a whole number"),
        ("rate = true", "rate = True is not a number"),
        ('rate = "0.5"', "rate = '0.5' is not a number"),
        ('mode = "c"', "mode = 'c' is not one of 'a', 'b'"),
        ("files = [1]", "files = [1] is not a list of strings"),
        ('files = "f1"', "files = 'f1' is not a list of strings"),
        ('weights = { a = "x" }', "weights = {'a': 'x'} is not a table of strings to numbers"),
        ("on = 1", "on = 1 is not true or false"),
    ],
)
def test_a_config_files_value_of_the_wrong_type_is_named(tmp_path, line, words):
    config = tmp_path / "c.toml"
    config.write_text(f'name = "x"\n{line}\n')
    with pytest.raises(ConfigError, match=re.escape(words)):
        parse(["--config", str(config)])


def test_a_switch_has_an_opposite_that_wins_over_the_config_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('name = "x"\non = true\n')
    assert parse(["--config", str(config)]).on is True
    assert parse(["--config", str(config), "--no-on"]).on is False
    assert parse(["--name", "x", "--on"]).on is True and parse(["--name", "x"]).on is False
    train = cli.build_parser().parse_args(["train", "--eval"])  # the opposite of --no-eval
    assert train.no_eval is False


def test_a_config_nested_past_the_parsers_depth_is_one_line(tmp_path):
    config = tmp_path / "deep.toml"
    config.write_text("name = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="deep.toml: unreadable config file"):
        parse(["--config", str(config)])


def test_an_output_is_never_written_over_the_commands_config(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("a cat sits\n", encoding="utf-8")
    config = tmp_path / "encode.toml"
    text = f'input = "{tmp_path / "in.txt"}"\n'
    config.write_text(text)
    assert cli.main(["encode", "--config", str(config), "--output", str(config)]) == 2
    assert "is also an input of this command" in capsys.readouterr().err
    assert config.read_text() == text


def test_every_command_takes_a_config_file(tmp_path, capsys):
    """`sbert encode --config`: the input, output and batch size from a file, in a real run."""
    (tmp_path / "in.txt").write_text("a cat sits\nit rains\n", encoding="utf-8")
    config = tmp_path / "encode.toml"
    config.write_text(f'input = "{tmp_path / "in.txt"}"\noutput = "{tmp_path / "v.npy"}"\n'
                      "batch_size = 1\nnormalize = true\n")  # fmt: skip
    assert cli.main(["encode", "--config", str(config)]) == 0
    assert "wrote 2 x 384 embeddings" in capsys.readouterr().err  # stdout may be the array
    parser = cli.build_parser()
    for command in cli.COMMANDS:
        assert parser.parse_args([command, "--config", "c.toml"]).config == "c.toml"


def test_help_lists_every_command_in_a_real_process():
    helps = subprocess.run([sys.executable, "-m", "sbert", "--help"], capture_output=True,
                           text=True, cwd=ROOT, check=True).stdout  # fmt: skip
    assert all(command in helps for command in cli.COMMANDS)
