"""A hypernetwork's settings: `TrainConfig`, the recipe of a training run, and `HyperConfig`,
the network's shape.

They live apart from torch so that the CLI builds `hypernet train`'s flags from these fields
(name, type, default, and the `help` in each field's metadata) without loading a model library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..cuts import CUTS
from ..errors import InputError


def _setting(default: Any, help: str) -> Any:
    """A field with the help text of its `hypernet train` flag."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # an upper bound: a time budget usually ends training first
    steps: int = _setting(5000, "at most this many steps")
    max_minutes: float | None = _setting(None, "time budget; the schedule ends with it")
    lr: float = _setting(5e-4, "peak learning rate of AdamW")
    warmup: int = _setting(30, "steps of linear learning-rate warm-up")
    weight_decay: float = _setting(0.01, "AdamW weight decay")
    # 2 x 128 tokens is ~1.5 s forward+backward on 2 cores
    batch: int = _setting(2, "sequences per step")
    seq_len: int = _setting(128, "tokens of the sampled tokenizer per sequence")
    negatives: int = _setting(2048, "sampled-softmax negatives per LM step")
    # the objective that matters
    lm_weight: float = _setting(
        1.0, "weight of the base model's next-token loss; 0 gives a cheap rec-only recipe"
    )
    aux_weight: float = _setting(
        0.1, "weight of the pull of copied tokens' predictions to their rows"
    )
    rec_weight: float = _setting(0.5, "weight of re-spelled base tokens giving back their rows")
    rec_batch: int = _setting(512, "base tokens re-spelled per step")
    # training a tokenizer takes ~0.7 s
    tokenizer_every: int = _setting(2, "a fresh sampled tokenizer every N steps")
    vocab_min: int = _setting(4000, "smallest sampled vocabulary size")
    # small slices cap what BPE can learn anyway
    vocab_max: int = _setting(48000, "largest sampled vocabulary size")
    slice_chars: int = _setting(200_000, "characters of text a sampled tokenizer is trained on")
    heldout_chars: int = _setting(
        3000, "the end of each corpus file: never trained on, evaluated on"
    )
    eval_every: int = _setting(100, "steps between held-out evaluations")
    checkpoint_every: int = _setting(50, "steps between checkpoints, where a run resumes")
    seed: int = _setting(0, "seed of the network's initialization and of all sampling")
    # see hypernet/network/training.py's docstring
    copied_rows: bool = _setting(
        False, "copied tokens get the network's rows too (the copy plus a learned correction)"
    )
    corpus_weights: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "draw corpus NAME (file stem) W times as often (default 1)",
            "flag": "--corpus-weight",
            "metavar": "NAME=W",
        },
    )
    corpus_seq_len: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "help": "sequences of N tokens for corpus NAME (e.g. longer ones for code)",
            "metavar": "NAME=N",
        },
    )

    # how sampled tokenizers cut text (hypernet/cuts.py): other families' cuts teach the
    # network rows for tokens the base never read as one
    cut_weights: dict[str, float] = field(
        default_factory=lambda: {"like": 1.0},
        metadata={
            "help": f"draw sampled tokenizers cut as CUT in proportion W ({', '.join(CUTS)})",
            "flag": "--cut-weight",
            "metavar": "CUT=W",
        },
    )

    def check(self, names: list[str]) -> None:
        """Per-corpus settings must name given corpora, cut weights known cuts; all positive."""
        for option, values in (("weight", self.corpus_weights), ("seq_len", self.corpus_seq_len)):
            for name, value in values.items():
                if name not in names:
                    raise InputError(f"corpus {option} for {name!r}: no corpus named so ({names})")
                if not value > 0:
                    raise InputError(f"corpus {option} for {name!r} must be positive, not {value}")
        if not self.cut_weights:
            raise InputError("cut weights: name at least one cut")
        for cut, weight in self.cut_weights.items():
            if cut not in CUTS:
                raise InputError(f"cut weight for {cut!r}: no such cut ({', '.join(CUTS)})")
            if not weight > 0:
                raise InputError(f"cut weight for {cut!r} must be positive, not {weight}")

    # A resumed run may change its budget; everything else is the recipe it was started with.
    BUDGET = ("steps", "max_minutes")


@dataclass
class HyperConfig:
    # 8 base pieces cover >99% of 32k BPE tokens
    max_pieces: int = _setting(8, "longer spellings are cut to this many base pieces")
    # a CPU-sized encoder; the base rows are 576-d for SmolLM2
    width: int = _setting(256, "the network's width")
    # two layers let pieces attend to each other (a prefix changes a suffix)
    layers: int = _setting(2, "encoder layers")
    heads: int = _setting(4, "attention heads; --width must be a multiple of them")
    dim: int = 0  # the base model's hidden size (set from the base)
    tied: bool = True  # untied bases get a second head for the LM head rows

    FROM_BASE = ("dim", "tied")  # set by the Trainer from the base model, never by the user
