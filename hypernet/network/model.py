"""The hypernetwork: a new token's base-tokenizer pieces in, its embedding rows out.

A token the base vocabulary lacks is spelled with base tokens (at most `max_pieces` of them;
bytes the base vocabulary lacks get learned fallback rows). The rows of those pieces, scaled to
unit statistics, go through a small transformer encoder; a masked mean pools it; a head per
embedding matrix predicts a correction that is added to the mean of the pieces' rows, in units of
the base rows' per-dimension std. The heads start at zero, so an untrained hypernetwork *is* the
subword-mean heuristic and training can only move away from it where that helps.

Saved as `hypernet.safetensors` + `hypernet.json` (the network's and the training run's
configs, the run's counters, the base model's fingerprint, held-out scores). The base rows
themselves are not saved: they come from the base model at load time, and the fingerprint
makes sure it is the right one.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..errors import InputError
from .config import HyperConfig, TrainConfig

N_BYTES = 256
PAD = -1  # piece id of an empty slot
WEIGHTS, CONFIG = "hypernet.safetensors", "hypernet.json"


@dataclass
class Fingerprint:
    """What identifies the base model a hypernetwork was trained for."""

    architecture: str
    rows: int  # usable embedding rows (min of matrix rows and vocabulary size)
    dim: int
    tied: bool
    sha256: str  # of the input embedding matrix (float32, row-major)

    @classmethod
    def of(cls, architecture: str, input_rows: Tensor, tied: bool) -> Fingerprint:
        data = input_rows.detach().to(torch.float32).contiguous().numpy().tobytes()
        digest = hashlib.sha256(data).hexdigest()
        return cls(architecture, input_rows.shape[0], input_rows.shape[1], tied, digest)

    def check(self, other: Fingerprint) -> None:
        """Refuse another base model; allow a fine-tune (same shapes, other values), warned."""
        mine, theirs = asdict(self), asdict(other)
        differ = [k for k in mine if k != "sha256" and mine[k] != theirs[k]]
        if differ:
            found = ", ".join(f"{k} {theirs[k]} (trained for {mine[k]})" for k in differ)
            raise InputError(f"this hypernetwork was trained for another base model: {found}")
        if self.sha256 != other.sha256:
            warnings.warn(
                "the base model's embeddings differ from the ones this hypernetwork was trained "
                "on (same shape: a fine-tune?); predictions may be less accurate",
                stacklevel=2,
            )


def architecture(config: dict) -> str:
    """The name a hypernetwork's fingerprint records for a model's config.json."""
    return (config.get("architectures") or [config.get("model_type", "unknown")])[0]


class HyperNet(nn.Module):
    def __init__(self, config: HyperConfig, input_rows: Tensor, output_rows: Tensor | None):
        super().__init__()
        assert input_rows.ndim == 2 and config.dim == input_rows.shape[1]
        assert (output_rows is None) == config.tied
        self.config = config
        rows = input_rows if output_rows is None else torch.cat([input_rows, output_rows], 1)
        rows = rows.detach().to(torch.float32)
        # The base rows are the model's vocabulary of meaning, not parameters: never trained,
        # never saved (they come back from the base model on load).
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("mean", rows.mean(0), persistent=False)
        self.register_buffer("std", rows.std(0).clamp(min=1e-6), persistent=False)
        self.fallback = nn.Parameter(self.mean.repeat(N_BYTES, 1).clone())  # missing bytes
        w = config.width
        self.project = nn.Linear(rows.shape[1], w)
        self.position = nn.Parameter(torch.zeros(config.max_pieces, w))
        layer = nn.TransformerEncoderLayer(
            w, config.heads, 4 * w, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, config.layers, norm=nn.LayerNorm(w), enable_nested_tensor=False
        )
        self.heads = nn.ModuleDict({"input": nn.Linear(w, config.dim)})
        if not config.tied:
            self.heads["output"] = nn.Linear(w, config.dim)
        for head in self.heads.values():  # step 0 = the mean of the pieces
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @property
    def n_rows(self) -> int:
        return self.rows.shape[0]

    def forward(self, pieces: Tensor) -> dict[str, Tensor]:
        """pieces [n, max_pieces]: base ids, `n_rows + b` for a missing byte b, PAD after the
        end. Returns {"input": [n, dim]} and, when untied, {"output": [n, dim]}."""
        assert pieces.shape[1] == self.config.max_pieces, (pieces.shape, self.config.max_pieces)
        mask = pieces != PAD
        assert bool(mask[:, 0].all()), "every token needs at least one piece"
        ids = pieces.clamp(min=0)
        missing = (ids >= self.n_rows).unsqueeze(-1)
        # two gathers, not one over cat(rows, fallback): that would copy every base row per call
        x = torch.where(
            missing,
            self.fallback[(ids - self.n_rows).clamp(min=0)],
            self.rows[ids.clamp(max=self.n_rows - 1)],
        )  # [n, L, D]
        weights = mask.unsqueeze(-1).to(x.dtype)
        base = (x * weights).sum(1) / weights.sum(1)  # the subword mean
        h = self.project((x - self.mean) / self.std) + self.position
        h = self.encoder(h, src_key_padding_mask=~mask)
        pooled = (h * weights).sum(1) / weights.sum(1)
        d = self.config.dim
        out = {}
        for i, (name, head) in enumerate(self.heads.items()):
            part = slice(i * d, (i + 1) * d)
            out[name] = base[:, part] + self.std[part] * head(pooled)
        return out


def pad_pieces(spellings: list[list[int]], max_pieces: int) -> Tensor:
    """Spellings (lists of piece ids) as a [n, max_pieces] tensor, cut and padded."""
    out = torch.full((len(spellings), max_pieces), PAD, dtype=torch.long)
    for i, ids in enumerate(spellings):
        if not ids:
            raise ValueError(f"spelling {i} is empty")
        ids = ids[:max_pieces]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


@dataclass
class Saved:
    """The JSON half of a saved hypernetwork. `train_config` is what a resumed run goes on
    with; `recipe` repeats its fields beside the run's counters, as files before it did (and
    as readers of `recipe["copied_rows"]` expect)."""

    config: HyperConfig
    fingerprint: Fingerprint
    base_model: str  # the name it was trained from, for people reading `hypernet show`
    recipe: dict = field(default_factory=dict)  # training settings and the run's counters
    scores: dict = field(default_factory=dict)  # held-out evaluations during training
    train_config: TrainConfig = field(default_factory=TrainConfig)


def save(net: HyperNet, meta: Saved, folder: Path) -> None:
    """Write into an existing folder (callers make it atomic)."""
    save_weights(net, folder / WEIGHTS)
    save_meta(meta, folder / CONFIG)


def save_weights(net: HyperNet, file: Path) -> None:
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(file))


def save_meta(meta: Saved, file: Path) -> None:
    file.write_text(json.dumps(asdict(meta), indent=2) + "\n")


def read_meta(folder: Path) -> Saved:
    file = Path(folder) / CONFIG
    if not file.is_file():
        raise InputError(f"{folder} is not a hypernetwork folder (no {CONFIG})")
    try:
        raw = json.loads(file.read_text())
        return Saved(
            config=HyperConfig(**raw["config"]),
            fingerprint=Fingerprint(**raw["fingerprint"]),
            base_model=raw["base_model"],
            recipe=raw.get("recipe", {}),
            scores=raw.get("scores", {}),
            train_config=_train_config(raw.get("train_config") or raw.get("recipe", {})),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{file} is not a valid hypernetwork config: {e}") from None


def _train_config(saved: dict) -> TrainConfig:
    """A TrainConfig from its saved fields. Files from before `train_config` keep them in the
    recipe, beside the run's counters; fields this version does not know are left out."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in known})


def load(
    folder: Path, architecture: str, input_rows: Tensor, output_rows: Tensor | None
) -> tuple[HyperNet, Saved]:
    """A saved hypernetwork on the given base rows; refuses a base model it was not made for."""
    meta = read_meta(folder)
    tied = output_rows is None
    meta.fingerprint.check(Fingerprint.of(architecture, input_rows, tied))
    net = HyperNet(meta.config, input_rows, output_rows)
    try:
        state = load_file(str(Path(folder) / WEIGHTS))  # safetensors: no pickle
        net.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError) as e:
        raise InputError(
            f"{folder}: unreadable weights, or not the ones hypernet.json describes: {e}"
        ) from None
    return net.eval(), meta
