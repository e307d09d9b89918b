"""The `tunewise` command line. Commands are thin: parse, call the core, render.

Every command lives in `tunewise/commands/<name>.py` and is listed once in COMMANDS below.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings

import click

from tunewise import __version__
from tunewise.errors import TunewiseError

# name -> module under tunewise.commands exposing `command` (a click.Command). Imported lazily so
# `tunewise advise` never pays for torch.
COMMANDS: dict[str, str] = {
    "init": "init",
    "advise": "advise",
    "audit": "audit",
    "estimate": "estimate",
    "run": "run",
    "runs": "runs",
    "compare": "compare",
    "train": "train",
    "export": "export",
    "report": "report",
    "serve": "serve",
    "ui": "ui",
}

HELP = {
    "init": "Write a commented task file from a data file (format, metric, rungs, business answers).",
    "advise": "Recommend an approach from the decision framework (instant, no model).",
    "audit": "Check a data file: format, bad lines, duplicates, conflicts, leakage, lengths, volume.",
    "estimate": "Cost model: per-request, monthly and training cost, break-even, GPU memory.",
    "run": "Climb the customisation ladder on a task's held-out data and decide.",
    "runs": "List past runs.",
    "compare": "Paired test between any two rungs of a finished run, with any metric.",
    "train": "Fine-tune (LoRA or full) on a task's train split.",
    "export": "Export a run's adapter, or a merged model folder.",
    "report": "Write report.html and report.md for a run.",
    "serve": "Serve a run's chosen configuration behind an OpenAI-compatible API.",
    "ui": "A local web app: new decision, runs with live progress, reports, playground.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        try:
            module = importlib.import_module(f"tunewise.commands.{COMMANDS[name]}")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("tunewise"):
                raise
            missing = err.name

            @click.command(name, help=HELP[name], context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args: tuple[str, ...]) -> None:
                raise click.ClickException(
                    f"`tunewise {name}` needs the package {missing!r}; install it with "
                    f"`pip install 'tunewise[ml,serve]' torch==2.13.0` (or run `make demo`)"
                )

            return unavailable
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(n, HELP[n]) for n in COMMANDS])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunewise")
def cli() -> None:
    """Should you fine-tune, or will prompting, few-shot examples or RAG do?

    tunewise answers with evidence from your own data. Start with `tunewise advise`,
    `tunewise audit DATA` or `tunewise run TASK.yaml`.
    """


def _quiet_libraries() -> None:
    """tunewise draws its own progress bars; the libraries' bars and deprecation notices are noise
    for our users. Set before transformers is imported (it reads these at import)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. transformers' "de-quantizing GGUF tensors" bar
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Deprecation notices from the libraries name our call sites (e.g. transformers' `past_key_values`
    # notice points at models/hf.py), so a module filter misses them: a CLI user cannot act on any.
    warnings.filterwarnings("ignore", category=FutureWarning)


def _stop_on_sigterm() -> None:
    """`kill`, a scheduler's time limit or `docker stop` end a command as Ctrl-C does: cleanup runs, the
    run store records the run as interrupted, and rerunning resumes from the saved work."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (embedded use): leave the host's handler alone
        pass


def main(argv: list[str] | None = None) -> None:
    _quiet_libraries()
    _stop_on_sigterm()
    try:
        cli.main(args=argv, prog_name="tunewise", standalone_mode=False)
    except TunewiseError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted; finished work is saved, rerun the same command to resume.", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("\nInterrupted; finished work is saved, rerun the same command to resume.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
