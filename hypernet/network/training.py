"""Training the hypernetwork across many sampled tokenizers, the base model frozen.

Each step draws text and (every `tokenizer_every` steps) a fresh tokenizer: a BPE "like" the
base tokenizer, trained on a random slice of a random corpus file with a random vocabulary size,
its text cut as a cut drawn by `cut_weights` says (`hypernet.cuts`: the base's own, or another
family's, whose tokens merge across the base's cuts).
Three weighted objectives, each switched off by a zero weight:

- lm: the base model's own next-token loss on the batch tokenized with the sampled tokenizer.
  Tokens the base vocabulary has keep their true rows, aligned and filled as in a transplant
  (`hypernet.align.align`); the others get rows predicted now. The output softmax is sampled:
  the batch's tokens plus `negatives` drawn uniformly from the rest of the vocabulary, with a
  log(V_rest / n_drawn) correction on the drawn ones. All rows are computed fresh every step:
  a stale cache of rows outside the batch makes the loss diverge within tens of steps.
- aux: predictions for the batch's tokens that the base vocabulary has, pulled to their rows.
- rec: base tokens split at a random byte and re-spelled from the two halves (BPE-dropout
  style) must give back their own rows. No forward pass of the base model: cheap on a CPU.

With `copied_rows`, tokens the base vocabulary has get the network's rows too (spelled as the
one base token they are: the copy plus a learned correction, zero at step 0), so that the LM loss
can adapt them to segmentations the base model never read. aux then keeps those corrections
small. Corpora are drawn by `corpus_weights`; `corpus_seq_len` gives one (code) longer context.

The learning rate warms up, then follows a cosine over max(step / steps, elapsed / budget), so a
time budget ends training at the bottom of the schedule. Checkpoints (weights, optimizer,
sampler and RNG state; safetensors and JSON, never pickle) make a run resumable.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from ..align import Alignment, align
from ..errors import Cancelled, InputError
from ..files import atomic_write
from ..io import open_checkpoint
from ..sources import load_tokenizer
from ..tokenizer_train import train_in_memory
from ..vocab import Decomposer, Vocab, load_vocab
from .config import TrainConfig
from .model import (
    CONFIG,
    WEIGHTS,
    Fingerprint,
    HyperConfig,
    HyperNet,
    Saved,
    architecture,
    pad_pieces,
    read_meta,
    save,
    save_meta,
    save_weights,
)

CHECKPOINT = "checkpoint"
LOOP = "loop.json"


@dataclass
class Sampled:
    """A sampled tokenizer, aligned with the base model as a transplant aligns it."""

    tokenizer: PreTrainedTokenizerFast
    vocab: Vocab
    alignment: Alignment
    spellings: dict[int, list[int]] = field(default_factory=dict)  # filled on demand

    @cached_property
    def base_id(self) -> dict[int, int]:
        """New id -> the base row a transplant keeps for it: copies and matched specials."""
        return self.alignment.copies | self.alignment.specials


def latest_checkpoint(out: Path) -> Path:
    """The checkpoint to resume from: `checkpoint`, or `checkpoint.old` where a run was killed
    between the two renames of `save_checkpoint`."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        if (Path(out) / name / LOOP).is_file():
            return Path(out) / name
    raise InputError(f"{out} has no checkpoint to resume from")


def saved_recipe(out: Path) -> tuple[TrainConfig, HyperConfig, list[Path]]:
    """The configs and corpus files a checkpointed run in `out` was started with."""
    folder = latest_checkpoint(out)
    meta = read_meta(folder)
    corpus = json.loads((folder / LOOP).read_text()).get("corpus_files", [])
    return meta.train_config, meta.config, [Path(c) for c in corpus]


def resume_recipe(
    out: Path, given: dict[str, object], corpus: list[Path] | None
) -> tuple[TrainConfig, HyperConfig, list[Path]]:
    """The saved recipe with a new budget; any other given setting must agree with it."""
    config, hyper, saved_corpus = saved_recipe(out)
    fixed = [(t, f.name) for t in (config, hyper) for f in fields(t) if f.name in given]
    clashes = [
        f"{name} {given[name]} (saved {getattr(target, name)})"
        for target, name in fixed
        if name not in TrainConfig.BUDGET and given[name] != getattr(target, name)
    ]
    if corpus and saved_corpus and [p.resolve() for p in corpus] != saved_corpus:
        clashes.append("corpus files differ from the saved run's")
    if clashes:
        raise InputError("--resume continues the saved recipe; these differ: " + "; ".join(clashes))
    for name in TrainConfig.BUDGET:
        if name in given:
            setattr(config, name, given[name])
    return config, hyper, saved_corpus or list(corpus or [])


class Trainer:
    def __init__(
        self,
        model_dir: Path,
        corpus: list[Path],
        out: Path,
        config: TrainConfig,
        hyper: HyperConfig | None = None,
        base_name: str | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config, self.out, self.log = config, Path(out), log
        self.model_dir, self.base_name = Path(model_dir), base_name or str(model_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.corpus_files = [Path(c).resolve() for c in corpus]
        self.texts = self._read_corpus(corpus)
        config.check([name for name, _, _ in self.texts])
        ckpt = open_checkpoint(self.model_dir)
        self.architecture = architecture(ckpt.config)
        self.base_tok = load_tokenizer(self.model_dir)
        self.base_vocab = load_vocab(self.base_tok)
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        self.model = model.to(self.device).eval().requires_grad_(False)
        inp = model.get_input_embeddings().weight.detach()
        self.rows = min(inp.shape[0], len(self.base_vocab))
        out_rows = None if ckpt.tied else model.get_output_embeddings().weight.detach()
        self.input_rows = inp[: self.rows]
        self.output_rows = None if out_rows is None else out_rows[: self.rows]
        self.special_mean = self._special_mean()
        self.decomposer = Decomposer(self.base_tok, self.base_vocab, self.rows)
        hyper = hyper or HyperConfig()
        hyper.dim, hyper.tied = self.input_rows.shape[1], ckpt.tied
        hyper.check()
        torch.manual_seed(config.seed)
        self.net = HyperNet(hyper, self.input_rows, self.output_rows).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.rng = random.Random(config.seed)
        self.step, self.elapsed, self.seen_tokens = 0, 0.0, 0
        self.scores: list[dict] = []
        self.tokenizers_drawn = 0
        self.sampled: Sampled | None = None
        self._rec_pool = [
            i
            for i in range(self.rows)
            if (s := self.base_vocab.surfaces[i]) is not None and len(s) >= 2
        ]
        self._heldouts: dict[str, Sampled] = {}
        self.cancelled: Callable[[], bool] = lambda: False  # set by `fit`

    # -- data ---------------------------------------------------------------------------------

    def _read_corpus(self, corpus: list[Path]) -> list[tuple[str, str, str]]:
        """(name, training text, held-out tail) per file."""
        out = []
        for file in corpus:
            if not Path(file).is_file():
                raise InputError(f"corpus file {file} not found")
            text = Path(file).read_text(encoding="utf-8", errors="replace")
            cut = len(text) - self.config.heldout_chars
            if cut < self.config.heldout_chars:  # less to train on than to hold out
                raise InputError(
                    f"corpus file {file} is too small: it needs more than "
                    f"{2 * self.config.heldout_chars} characters"
                )
            out.append((Path(file).stem, text[:cut], text[cut:]))
        if not out:
            raise InputError("no corpus files given")
        return out

    def _align(self, tok: PreTrainedTokenizerFast) -> Sampled:
        """Aligned by `align`, as a transplant does: training sees the rows it will keep."""
        vocab = load_vocab(tok)
        return Sampled(tok, vocab, align(self.base_vocab, vocab, self.rows))

    def _draw_tokenizer(self, text: str) -> Sampled:
        c = self.config
        start = self.rng.randrange(max(1, len(text) - c.slice_chars))
        size = int(math.exp(self.rng.uniform(math.log(c.vocab_min), math.log(c.vocab_max))))
        lines = text[start : start + c.slice_chars].splitlines(keepends=True)
        cuts, weights = zip(*sorted(c.cut_weights.items()), strict=True)
        cut = self.rng.choices(cuts, weights)[0] if len(cuts) > 1 else cuts[0]
        self.tokenizers_drawn += 1
        return self._align(train_in_memory(lines, "bpe", size, like=self.model_dir, cut=cut))

    def _spell(self, sampled: Sampled, ids: list[int]) -> Tensor:
        """Pieces as `Predictor` spells them: a copy is the one base token it is, any other
        token its surface in base pieces."""
        copies = sampled.alignment.copies
        for i in ids:
            if i not in sampled.spellings:
                s = sampled.vocab.surfaces[i]
                assert s is not None, "only tokens with a surface form are predicted"
                sampled.spellings[i] = [copies[i]] if i in copies else self.decomposer.spell(s)
        pieces = [sampled.spellings[i] for i in ids]
        return pad_pieces(pieces, self.net.config.max_pieces).to(self.device)

    def _rows(self, sampled: Sampled, ids: list[int]) -> dict[str, Tensor]:
        """Rows for new ids as a transplant fills them (`hypernet.predict.assemble`): base rows
        for copies and matched specials, the mean base special row for other specials and
        placeholders, predictions for the rest (with `copied_rows`, for the copies too)."""
        kept = sampled.alignment.specials if self.config.copied_rows else sampled.base_id
        out = self._base_rows([kept.get(i, 0) for i in ids])
        free = [k for k, i in enumerate(ids) if i not in kept]
        todo = [k for k in free if sampled.vocab.surfaces[ids[k]] is not None]
        no_surface = [k for k in free if sampled.vocab.surfaces[ids[k]] is None]
        for name, row in self.special_mean.items():
            out[name][no_surface] = row
        if todo:
            predicted = self.net(self._spell(sampled, [ids[k] for k in todo]))
            where = torch.tensor(todo, device=self.device)
            out = {name: rows.index_put((where,), predicted[name]) for name, rows in out.items()}
        return out

    def _base_rows(self, base_ids: list[int]) -> dict[str, Tensor]:
        base = torch.tensor(base_ids, dtype=torch.long, device=self.device)
        out = {"input": self.input_rows[base]}
        if self.output_rows is not None:
            out["output"] = self.output_rows[base]
        return out

    def _special_mean(self) -> dict[str, Tensor]:
        """The row a transplant gives specials without a counterpart and placeholders: the mean
        of the base special rows (of all rows, where the base has no specials)."""
        specials = [i for i in self.base_vocab.special_ids() if i < self.rows]
        rows = self._base_rows(specials or list(range(self.rows)))
        return {name: matrix.mean(0) for name, matrix in rows.items()}

    def _batch(self, sampled: Sampled, text: str, seq_len: int) -> Tensor:
        """[batch, seq_len + 1] ids of the sampled tokenizer, BOS first when it has one."""
        c = self.config
        bos = sampled.tokenizer.bos_token_id
        rows: list[list[int]] = []
        for _ in range(100 * c.batch):
            self._stop_if_cancelled()  # each try tokenizes 8 * seq_len characters
            start = self.rng.randrange(max(1, len(text) - 8 * seq_len))
            ids = sampled.tokenizer(text[start : start + 8 * seq_len], add_special_tokens=False)[
                "input_ids"
            ][1:]  # the first token is probably a cut word
            ids = ([bos] if bos is not None else []) + ids
            if len(ids) >= seq_len + 1:
                rows.append(ids[: seq_len + 1])
            if len(rows) == c.batch:
                break
        if len(rows) < c.batch:
            raise InputError(
                f"the corpus gives no {seq_len}-token sequence in {8 * seq_len} characters: "
                "too little text, or a shorter --seq-len"
            )
        return torch.tensor(rows, device=self.device)

    # -- losses -------------------------------------------------------------------------------

    def lm_loss(self, sampled: Sampled, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Sampled-softmax next-token loss (nats/token) and the aux loss on the batch."""
        unique = torch.unique(ids)
        n_vocab = len(sampled.vocab)
        rest = n_vocab - len(unique)
        n_neg = min(self.config.negatives, rest)
        taken = torch.zeros(n_vocab, dtype=torch.bool)
        taken[unique.cpu()] = True
        pool = torch.nonzero(~taken).flatten()
        negatives = pool[torch.randperm(len(pool))[:n_neg]].to(self.device)
        candidates = torch.cat([unique, negatives])
        rows = self._rows(sampled, candidates.tolist())
        local = torch.searchsorted(unique, ids)  # position of each id among the candidates
        embeds = rows["input"][local[:, :-1]]
        hidden = self.model.base_model(inputs_embeds=embeds).last_hidden_state
        head = rows.get("output", rows["input"])
        logits = hidden @ head.T
        if n_neg:
            correction = torch.zeros(len(candidates), device=self.device)
            correction[len(unique) :] = math.log(rest / n_neg)
            logits = logits + correction
        lm = F.cross_entropy(logits.flatten(0, 1), local[:, 1:].flatten())
        return lm, self._aux(sampled, unique.tolist())

    def _aux(self, sampled: Sampled, ids: list[int]) -> Tensor:
        """Predictions for the copies among `ids`, pulled to the rows they copy."""
        copies = sampled.alignment.copies
        known = [i for i in ids if i in copies]
        if not known:
            return torch.zeros((), device=self.device)
        predicted = self.net(self._spell(sampled, known))
        base = torch.tensor([copies[i] for i in known], device=self.device)
        return self._distance(predicted, base)

    def rec_loss(self) -> Tensor:
        """Base tokens re-spelled from two halves must give back their own rows."""
        ids = self.rng.sample(self._rec_pool, min(self.config.rec_batch, len(self._rec_pool)))
        spellings = []
        for i in ids:
            s = self.base_vocab.surfaces[i]
            assert s is not None
            cut = self.rng.randrange(1, len(s))
            spellings.append(self.decomposer.spell(s[:cut]) + self.decomposer.spell(s[cut:]))
        pieces = pad_pieces(spellings, self.net.config.max_pieces).to(self.device)
        return self._distance(self.net(pieces), torch.tensor(ids, device=self.device))

    def _distance(self, predicted: dict[str, Tensor], base: Tensor) -> Tensor:
        """Mean squared error in units of the base rows' per-dimension std."""
        d = self.net.config.dim
        losses = []
        for k, (name, rows) in enumerate(predicted.items()):
            true = self.input_rows[base] if name == "input" else self.output_rows[base]  # type: ignore[index]
            std = self.net.std[k * d : (k + 1) * d]
            losses.append((((rows - true) / std) ** 2).mean())
        return torch.stack(losses).mean()

    # -- loop ---------------------------------------------------------------------------------

    def progress_fraction(self) -> float:
        c = self.config
        budget = c.max_minutes * 60 if c.max_minutes else math.inf
        return min(1.0, max(self.step / c.steps, self.elapsed / budget))

    def _lr(self) -> float:
        c = self.config
        warm = min(1.0, (self.step + 1) / max(1, c.warmup))
        return c.lr * warm * 0.5 * (1 + math.cos(math.pi * self.progress_fraction()))

    def train_step(self) -> dict[str, float]:
        c = self.config
        weights = [c.corpus_weights.get(name, 1.0) for name, _, _ in self.texts]
        name, text, _ = self.rng.choices(self.texts, weights)[0]
        if self.sampled is None or self.step % c.tokenizer_every == 0:
            self.sampled = self._draw_tokenizer(text)
            self._stop_if_cancelled()  # drawing trains a tokenizer: seconds
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        self.net.train()
        loss = torch.zeros((), device=self.device)
        out: dict[str, float] = {}
        if c.lm_weight > 0 or c.aux_weight > 0:
            ids = self._batch(self.sampled, text, c.corpus_seq_len.get(name, c.seq_len))
            if c.lm_weight > 0:
                lm, aux = self.lm_loss(self.sampled, ids)
                loss = loss + c.lm_weight * lm + c.aux_weight * aux
                out.update(lm=lm.item(), aux=aux.item())
            else:
                aux = self._aux(self.sampled, torch.unique(ids).tolist())
                loss = loss + c.aux_weight * aux
                out["aux"] = aux.item()
            self.seen_tokens += ids.numel()
        if c.rec_weight > 0:
            rec = self.rec_loss()
            loss = loss + c.rec_weight * rec
            out["rec"] = rec.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.optimizer.step()
        self.step += 1
        return out

    def _heldout(self, cut: str) -> Sampled:
        """The fixed held-out tokenizer cut as `cut`: trained once, on the first `slice_chars`
        of every file at once, so the sampler never draws it."""
        if cut not in self._heldouts:
            self._stop_if_cancelled()  # each cut's tokenizer is trained first: seconds
            lines = [
                line
                for _, text, _ in self.texts
                for line in text[: self.config.slice_chars].splitlines(keepends=True)
            ]
            tok = train_in_memory(lines, "bpe", 16000, like=self.model_dir, cut=cut)
            self._heldouts[cut] = self._align(tok)
        return self._heldouts[cut]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Bits per byte on each file's held-out tail, with every row predicted fresh and a
        full softmax, under fixed held-out tokenizers: one cut like the base (keys: the
        corpus names) and one per other cut the sampler draws (keys: NAME/CUT)."""
        cuts = ["like", *sorted(c for c in self.config.cut_weights if c != "like")]
        scores = {}
        for cut in cuts:
            suffix = "" if cut == "like" else f"/{cut}"
            scores |= {f"{name}{suffix}": v for name, v in self._score(self._heldout(cut)).items()}
        self.scores.append({"step": self.step, **scores})
        return scores

    def _score(self, sampled: Sampled) -> dict[str, float]:
        """Bits per byte of each held-out tail under `sampled` and the network's rows."""
        self.net.eval()
        ids = list(range(len(sampled.vocab)))
        parts = []
        for i in range(0, len(ids), 4096):
            self._stop_if_cancelled()
            parts.append(self._rows(sampled, ids[i : i + 4096]))
        rows = {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        head = rows.get("output", rows["input"])
        bos = sampled.tokenizer.bos_token_id
        scores = {}
        for name, _, tail in self.texts:
            self._stop_if_cancelled()
            ids_ = sampled.tokenizer(tail, add_special_tokens=False)["input_ids"]
            x = torch.tensor([([bos] if bos is not None else []) + ids_], device=self.device)
            hidden = self.model.base_model(inputs_embeds=rows["input"][x[:, :-1]])
            logits = hidden.last_hidden_state[0] @ head.T
            nats = F.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            scores[name] = round(nats / math.log(2) / len(tail.encode()), 4)
        return scores

    def fit(
        self,
        progress: bool = True,
        report: Callable[[dict], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Path:
        """Train to the end of the budget, checkpointing as it goes; then export. `report`
        gets each step's losses and each held-out evaluation; `cancelled` is asked every step."""
        from tqdm import tqdm

        c = self.config
        report = report or (lambda event: None)
        self.cancelled = cancelled or (lambda: False)
        bar = tqdm(total=c.steps, initial=self.step, disable=not progress, unit="step")
        if self.step == 0:
            self._evaluate(report, "(the subword mean)")
        start, tokens0 = time.perf_counter() - self.elapsed, self.seen_tokens
        while self.progress_fraction() < 1.0:
            self._stop_if_cancelled()
            out = self.train_step()
            self.elapsed = time.perf_counter() - start
            rate = (self.seen_tokens - tokens0) / max(1e-9, self.elapsed)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in out.items()} | {"tok/s": f"{rate:.0f}"})
            report({"step": self.step, "fraction": self.progress_fraction(), **out})
            if self.step % c.eval_every == 0:
                self._evaluate(report)
            if self.step % c.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        if not self.scores or self.scores[-1]["step"] != self.step:
            self._evaluate(report)
        self.save_checkpoint()
        self.export()
        return self.out

    def _stop_if_cancelled(self) -> None:
        """Asked every step, inside its long parts (a tokenizer drawn, a batch tokenized) and
        between the parts of a held-out evaluation."""
        if self.cancelled():
            raise Cancelled("training cancelled")

    def _evaluate(self, report: Callable[[dict], None], note: str = "") -> None:
        self._stop_if_cancelled()  # the evaluation first trains its tokenizer: seconds
        scores = self.evaluate()
        self.log(f"step {self.step}: held-out bits/byte {scores} {note}".rstrip())
        report({"step": self.step, "fraction": self.progress_fraction(), "held_out": scores})

    # -- persistence --------------------------------------------------------------------------

    def meta(self) -> Saved:
        fingerprint = Fingerprint.of(self.architecture, self.input_rows.cpu(), self.net.config.tied)
        recipe = asdict(self.config) | {
            "corpus": [name for name, _, _ in self.texts],
            "steps_done": self.step,
            "minutes": round(self.elapsed / 60, 2),
            "tokens_seen": self.seen_tokens,
            "tokenizers_drawn": self.tokenizers_drawn,
            "device": self.device.type,
        }
        scores = {"held_out": self.scores}
        return Saved(self.net.config, fingerprint, self.base_name, recipe, scores, self.config)

    def export(self) -> None:
        """hypernet.safetensors + hypernet.json in `out`, each renamed into place."""
        # the JSON is renamed last (the inner block exits first): it marks the export done
        with atomic_write(self.out / CONFIG) as meta, atomic_write(self.out / WEIGHTS) as weights:
            save_weights(self.net, weights)
            save_meta(self.meta(), meta)

    def save_checkpoint(self) -> None:
        folder = self.out / CHECKPOINT
        tmp = self.out / (CHECKPOINT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save(self.net, self.meta(), tmp)
        state, tensors = _flatten_optimizer(self.optimizer)
        tensors["torch_rng"] = torch.get_rng_state()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        loop = {
            "step": self.step,
            "elapsed": self.elapsed,
            "seen_tokens": self.seen_tokens,
            "tokenizers_drawn": self.tokenizers_drawn,
            "scores": self.scores,
            "rng": _jsonable(self.rng.getstate()),
            "optimizer": state,
            "corpus_files": [str(p) for p in self.corpus_files],
        }
        (tmp / LOOP).write_text(json.dumps(loop))
        old = self.out / (CHECKPOINT + ".old")  # a complete checkpoint exists at every instant
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)

    def resume(self) -> None:
        """Go on from the latest checkpoint. The trainer must have been built with its recipe
        (`resume_recipe` gives it; the budget may differ): the checkpoint is the one source."""
        resume_recipe(self.out, asdict(self.config) | asdict(self.net.config), None)
        folder = latest_checkpoint(self.out)
        loop = json.loads((folder / LOOP).read_text())
        self.net.load_state_dict(load_file(str(folder / "hypernet.safetensors")))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        torch.set_rng_state(tensors.pop("torch_rng"))
        self.optimizer.load_state_dict(_unflatten_optimizer(loop["optimizer"], tensors))
        self.rng.setstate(_tupled(loop["rng"]))
        self.step, self.elapsed = loop["step"], loop["elapsed"]
        self.seen_tokens, self.scores = loop["seen_tokens"], loop["scores"]
        self.tokenizers_drawn = loop["tokenizers_drawn"]


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, Tensor]]:
    """An optimizer state dict as JSON + named tensors (safetensors holds tensors only)."""
    sd = optimizer.state_dict()
    tensors, state = {}, {}
    for pid, values in sd["state"].items():
        state[str(pid)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                state[str(pid)][key] = None
            else:
                state[str(pid)][key] = value
    return {"state": state, "param_groups": sd["param_groups"]}, tensors


def _unflatten_optimizer(flat: dict, tensors: dict[str, Tensor]) -> dict:
    state = {
        int(pid): {k: tensors[f"{pid}.{k}"] if v is None else v for k, v in values.items()}
        for pid, values in flat["state"].items()
    }
    return {"state": state, "param_groups": flat["param_groups"]}


def _jsonable(value: object) -> object:
    return [_jsonable(v) for v in value] if isinstance(value, tuple | list) else value


def _tupled(value: object) -> object:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
