"""``ldlm`` command line: train | sample | quickstart | report | configs.

ldlm train CONFIG [key.sub=value ...]     train a preset (configs/) or a YAML file, e.g.
                                          ldlm train quickstart autoencoder_train.steps=500
ldlm sample RUN_DIR [-n 16] [--steps 200] [--seed 0] [--out samples.txt]
ldlm quickstart [--out results/quickstart.json]
ldlm report RUN_DIR --out results/NAME.json  judge samples vs an untrained twin, plot learning curves
ldlm configs                              list the presets
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


class CLIError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def _cmd_train(args: argparse.Namespace) -> None:
    from ldlm.config import load_config
    from ldlm.recipes import RECIPES

    cfg = load_config(args.config, args.overrides)
    print(f"training {cfg.name!r} ({cfg.recipe}) -> {cfg.run_dir}", file=sys.stderr)
    _, summary = RECIPES[cfg.recipe](cfg, progress=not args.quiet)
    print(json.dumps(summary, indent=2))


def _cmd_sample(args: argparse.Namespace) -> None:
    from ldlm.io import atomic_write_text
    from ldlm.pipeline import LatentDiffusionLM

    model = LatentDiffusionLM.from_pretrained(args.run_dir, device=args.device)
    texts = model.generate(args.num_samples, steps=args.steps, sampler=args.sampler, seed=args.seed)
    for i, text in enumerate(texts):
        print(f"[{i}] {text}")
    if args.out:
        atomic_write_text(args.out, "\n".join(texts) + "\n")
        print(f"wrote {len(texts)} samples to {args.out}", file=sys.stderr)


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from ldlm.quickstart import run_quickstart

    run_quickstart(config=args.config, overrides=args.overrides, out=Path(args.out), progress=not args.quiet)


def _cmd_report(args: argparse.Namespace) -> None:
    from ldlm.pipeline import LatentDiffusionLM
    from ldlm.quickstart import report_run

    model = LatentDiffusionLM.from_pretrained(args.run_dir, device=args.device)
    report_run(model, Path(args.out), config=model.cfg.name, num_samples=args.num_samples)


def _cmd_configs(args: argparse.Namespace) -> None:
    from ldlm.config import CONFIG_DIR, list_presets

    for name in list_presets():
        first = (CONFIG_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:20s} {first}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldlm", description="Latent diffusion language models (COSMOS, LDLM)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a preset or YAML config")
    p.add_argument("config", help="preset name (see `ldlm configs`) or path to a YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. autoencoder_train.steps=100")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="generate texts from a trained run")
    p.add_argument("run_dir")
    p.add_argument("-n", "--num-samples", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's config)")
    p.add_argument("--sampler", default=None, help="euler | euler_maruyama | ddim (default: the run's config)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="also write the texts here, one per line")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("quickstart", help="train a CPU-sized COSMOS on the offline news corpus, sample, judge")
    p.add_argument("--config", default="quickstart")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", default="results/quickstart.json")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("report", help="judge a trained run against its untrained twin; write JSON + curves")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="JSON file to write (a _curves.png is written beside it)")
    p.add_argument("-n", "--num-samples", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("configs", help="list the presets")
    p.set_defaults(func=_cmd_configs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ldlm.config import ConfigError
    from ldlm.data import DatasetError, FeatureCacheError
    from ldlm.encoders import EncoderError
    from ldlm.io import WeightFileError
    from ldlm.resources import ModelNotFoundError

    try:
        args.func(args)
    except (
        CLIError,
        ConfigError,
        DatasetError,
        EncoderError,
        FeatureCacheError,
        WeightFileError,
        ModelNotFoundError,
        FileNotFoundError,
        ValueError,
    ) as err:
        print(f"ldlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
