"""A hypernetwork's settings: `TrainConfig`, the recipe of a training run, and `HyperConfig`,
the network's shape.

They live apart from torch so that the CLI builds `hypernet train`'s flags from these fields
(name, type, default, and the `help` in each field's metadata) without loading a model library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..cuts import CUTS
from ..errors import InputError

# A recipe's upper bounds, checked before a run starts (and before a job is queued): past them
# one step runs for minutes, which a cancel waits for, or the network does not fit in memory.
MAX_SEQ_LEN = 8192  # tokens a sequence: the longest context of the bases (SmolLM2's)
STEP_TOKENS = 16_384  # batch x seq_len: the base model keeps a step's activations for backward
MAX_HELDOUT_CHARS = 20_000  # a held-out tail is scored as one sequence: within MAX_SEQ_LEN tokens
ADAM_BYTES = 16  # a parameter's float32 weight, gradient and AdamW's two moments
FALLBACK_ROWS = 256  # the network's rows for bytes the base vocabulary lacks (model.N_BYTES)


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
    batch: int = _setting(2, f"sequences per step (batch x seq_len <= {STEP_TOKENS})")
    seq_len: int = _setting(
        128, f"tokens of the sampled tokenizer per sequence (at most {MAX_SEQ_LEN})"
    )
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
        3000,
        f"the end of each corpus file, never trained on: held out (at most {MAX_HELDOUT_CHARS})",
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
        self._check_step()

    def _check_step(self) -> None:
        """A step's sequences within MAX_SEQ_LEN tokens each and STEP_TOKENS in all."""
        lengths = {"seq_len": self.seq_len}
        lengths |= {f"corpus seq_len for {n!r}": v for n, v in self.corpus_seq_len.items()}
        for option, value in lengths.items():
            if value > MAX_SEQ_LEN:
                raise InputError(f"{option} is {value}, above the longest sequence, {MAX_SEQ_LEN}")
        if self.heldout_chars > MAX_HELDOUT_CHARS:
            raise InputError(f"heldout_chars is {self.heldout_chars}, above {MAX_HELDOUT_CHARS}")
        tokens = self.batch * max(lengths.values())
        if tokens > STEP_TOKENS:
            raise InputError(
                f"batch {self.batch} x seq_len {max(lengths.values())} is {tokens} tokens a step, "
                f"above {STEP_TOKENS}: a smaller batch or shorter sequences"
            )

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

    def parameters(self) -> int:
        """HyperNet's parameter count; with `dim` still 0 (the base not read yet), the ones
        that do not depend on the base, which the encoder's 12 width^2 a layer dominate."""
        w, d = self.width, self.dim
        layer = 12 * w * w + 13 * w  # attention 4 w^2, feed-forward 8 w^2, biases, two norms
        heads = 1 if self.tied else 2  # an untied base's rows are its input and output rows
        return (
            self.layers * layer
            + (self.max_pieces + 3) * w  # positions, the projection's bias, the final norm
            + (FALLBACK_ROWS + w) * heads * d  # fallback rows, the projection
            + heads * (w + 1) * d
        )

    def check(self, memory_bytes: int | None = None) -> None:
        """The width splits into the heads, and the weights with AdamW's state fit in
        `memory_bytes` (None: this machine's memory)."""
        if self.width % self.heads:
            raise InputError(f"width {self.width} must be a multiple of heads {self.heads}")
        budget = machine_memory() if memory_bytes is None else memory_bytes
        need = self.parameters() * ADAM_BYTES
        if need > budget:
            raise InputError(
                f"width {self.width} x {self.layers} layers is {self.parameters():,} parameters: "
                f"{need / 2**30:.1f} GiB with AdamW's state, over the {budget / 2**30:.1f} GiB "
                "there are for training"
            )


def machine_memory() -> int:
    """This machine's memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
