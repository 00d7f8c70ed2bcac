"""`hrlaif` command line. Each subcommand lives in hrlaif/harness/commands/<name>.py and
defines `add_arguments(parser)` and `run(args) -> int`; modules are imported lazily so
`hrlaif --help` stays instant (torch and transformers load only when needed).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from hrlaif.core.errors import UserError
from hrlaif.core.hardware import hold_back_torch

COMMANDS = {
    # name: (module, one-line help)
    "run": ("hrlaif.harness.commands.run", "train SFT, RLAIF and HRLAIF from one config, evaluate all three, report"),
    "eval": ("hrlaif.harness.commands.eval",
             "score a checkpoint on C-Eval, MMLU, GSM8K, HumanEval, ToxiGen, satisfaction"),
    "label": ("hrlaif.harness.commands.label",
              "AI-feedback labels (basic | hybrid | red teaming) and the label-accuracy table"),
    "redteam": ("hrlaif.harness.commands.redteam",
                "red teaming: SFT answers to harmful prompts, flagged, rewritten, re-judged"),
    "annotate": ("hrlaif.harness.commands.annotate",
                 "export a sheet for human raters / import it and compare with the AI judge"),
    "sft": ("hrlaif.harness.commands.sft", "supervised fine-tuning on alpaca or chat data"),
    "sample": ("hrlaif.harness.commands.sample", "sample K responses per prompt from a checkpoint"),
    "train-rm": ("hrlaif.harness.commands.train_rm", "train the K-wise reward model on labelled partial orders"),
    "ppo": ("hrlaif.harness.commands.ppo", "DeepSpeed PPO against a reward model, with drift evaluation"),
    "report": ("hrlaif.harness.commands.report", "regenerate the comparison report of a run directory"),
    "gate": ("hrlaif.harness.commands.gate", "paired non-inferiority gate: may the candidate ship?"),
    "eval-rm": ("hrlaif.harness.commands.eval_rm", "accuracy of any reward model on preference pairs (clustered CI)"),
    "audit-judge": ("hrlaif.harness.commands.audit_judge", "can a judge tell responses apart? order consistency, "
                                                    "position and length bias, agreement, repeatability"),
    "compare": ("hrlaif.harness.commands.compare", "evaluation dirs or checkpoints side by side: paired Δ with CIs"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hrlaif", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(_module=module)
    return p


def parse_args(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    # Only the chosen subcommand's module is imported to add its arguments.
    sub_name = next((a for a in argv if not a.startswith("-")), None)
    if sub_name in COMMANDS:
        sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        mod = importlib.import_module(COMMANDS[sub_name][0])
        mod.add_arguments(sub_action.choices[sub_name])
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        hold_back_torch()  # HRLAIF_CPU_ISA=avx2: torch and oneDNN dispatch as on an AVX2-only host
        parser, args = parse_args(argv)
    except UserError as e:  # e.g. a flag default read from a bad benchmark spec dir ($HRLAIF_SPEC_PATH)
        print(f"hrlaif: error: {e}", file=sys.stderr)
        return UserError.exit_code
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    # SIGTERM (CI timeouts, `kill`) unwinds like Ctrl-C, so context managers stop servers
    # and partial outputs stay consistent.
    import signal
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from hrlaif.core.allocator import keep_freed_memory
    keep_freed_memory()  # big tensors reuse heap memory instead of page-faulting fresh mmaps
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except UserError as e:
        print(f"hrlaif {args.command}: error: {e}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print(f"hrlaif {args.command}: interrupted; finished results are on disk", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
