"""``jaxprop generate``: text sampled from a sequence run's model (``--dataset text``,
``reverse`` or ``sort``).

    jaxprop generate --run runs/text --prompt "The " --tokens 200 [--temperature T --seed S] [--cache]

The run folder's ``model.npz`` holds the model and its vocabulary; the prompt is encoded with
it (a character it lacks is refused, naming it), ``--tokens`` tokens are sampled by
:func:`jaxprop.generate` (``--temperature 0``: greedy) and the prompt and its continuation are
printed.
"""

from __future__ import annotations

import argparse
import sys

from jaxprop.cli.args import positive_int


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR",
                   help="a jaxprop train run folder of --dataset text, reverse or sort")
    p.add_argument("--prompt", required=True, help="the text to continue (at least one "
                   "character, each in the run's vocabulary)")
    p.add_argument("--tokens", type=positive_int, default=200, metavar="N",
                   help="tokens (characters) to generate (default 200)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="divides the logits before sampling: below 1 safer, above 1 wilder; 0 "
                        "is greedy (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--cache", action="store_true",
                   help="keep each attention layer's keys and values (a KV cache): the same "
                        "text, each token one position's pass until the window is full; pays "
                        "for its longer compilation on long outputs")


def run(args) -> int:
    from jaxprop.data.preprocessing import check_seed
    from jaxprop.predict import generate_text

    text = generate_text(args.run, args.prompt, args.tokens, temperature=args.temperature,
                         seed=check_seed(args.seed), cache=args.cache)
    sys.stdout.write(args.prompt + text + ("" if text.endswith("\n") else "\n"))
    return 0
