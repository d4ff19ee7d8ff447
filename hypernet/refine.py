"""Refine: minutes of distillation from the original model into a transplanted one.

The teacher is the base model reading text with its own tokenizer; the student is the same
frozen body reading the same text with the new tokenizer and the new embedding rows. Only the
student's rows train (input rows, and LM-head rows when untied; tied stay tied). The student
never sees a label the teacher did not produce: at every *aligned boundary* (a character offset
where both tokenizations end a token, see `distill`) it is pulled towards the teacher's
log-likelihood of the chunk before it and the teacher's distribution over the next byte.

The teacher's side of each text window is computed once and cached for the run. The learning
rate warms up, then follows a cosine over max(step / steps, elapsed / budget), so a time
budget ends the run at the bottom of its schedule.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from . import distill as D
from .errors import Cancelled, InputError
from .io import Checkpoint
from .texts import cut_windows, require_window
from .vocab import load_vocab

if TYPE_CHECKING:
    from .align import Alignment, Setup

ROWS = ("new", "all")
DISTANCES = ("l1", "under", "binary")


@dataclass
class RefineConfig:
    minutes: float | None = 10.0  # wall-clock budget of the training loop
    steps: int | None = None  # or a number of steps; whichever ends first
    rows: str = "new"  # "new": rows the transplant predicted; "all": every row
    # Each trained row is its zero-shot row + a correction shared by all trained rows (a
    # low-rank map of the zero-shot row and a shift). A few minutes of text show most new tokens
    # once or twice: free per-row offsets overfit them (de 1.155x -> 1.257x on train tails in
    # bench/refine_tune.py), while the shared correction learns from every position (-> 1.118x).
    lr: float = 1e-3  # Adam
    rank: int = 32  # of the shared map; 0 leaves only the shift
    warmup: int = 10  # steps
    window_chars: int = 1200  # ~300 tokens: long enough for context, short enough for steps
    chunk_weight: float = 1.0  # ALM: chunk log-likelihoods between aligned boundaries
    byte_weight: float = 1.0  # the teacher's distribution over the next byte at each boundary
    hidden_weight: float = 0.0  # an intermediate layer's hidden state at each boundary
    hidden_layer: int | None = None  # default: the middle layer
    distance: str = "l1"  # chunk distance (DISTANCES); l1 won on train tails
    # the student's own next-token loss on the window: the bits per byte that evaluation counts
    lm_weight: float = 0.0
    temperature: float = 1.0  # ALM's binarisation temperature
    probe_windows: int = 4  # held-out windows scored before and after (loss before/after)
    # every N steps, the probe windows' bits per byte under the student; the run ends on the
    # rows that scored best (0: on the last rows). A falling distillation loss is not a falling
    # bits per byte.
    probe_every: int = 0
    seed: int = 0

    @classmethod
    def budget(cls, minutes: float | None, steps: int | None, rows: str = "new") -> RefineConfig:
        """The budget a user gave: with neither minutes nor steps, the default 10 minutes; steps
        alone run without a time limit."""
        if minutes is None and steps is None:
            return cls(rows=rows)
        return cls(minutes=minutes, steps=steps, rows=rows)

    def check(self) -> None:
        if self.minutes is None and self.steps is None:
            raise InputError("refine needs a budget: minutes or steps")
        if self.minutes is not None and not self.minutes > 0:
            raise InputError(f"refine minutes must be positive, got {self.minutes}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"refine steps must be at least 1, got {self.steps}")
        if self.rows not in ROWS:
            raise InputError(f"refine rows must be one of {', '.join(ROWS)}, got {self.rows!r}")
        if self.window_chars < 64:
            raise InputError("refine windows must hold at least 64 characters")
        if self.distance not in DISTANCES:
            raise InputError(f"refine distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.lm_weight < 0 or self.probe_every < 0:
            raise InputError("refine lm_weight and probe_every must not be negative")
        if self.rank < 0 or not self.lr > 0:
            raise InputError("refine needs rank >= 0 and a positive learning rate")


@dataclass
class Tick:
    step: int
    fraction: float  # of the budget
    loss: float
    elapsed: float


@dataclass
class RefineResult:
    text_bytes: int  # bytes of refinement text read (training windows)
    windows: int
    steps: int
    minutes: float
    rows: str
    trained_rows: int
    loss_before: float  # distillation loss on the probe windows
    loss_after: float
    probe: str  # "held-out" windows, or "training" windows when the text is too short
    config: dict
    # with probe_every: the step whose rows were kept (0: the zero-shot rows), and the probe
    # windows' bits per byte under them and under the zero-shot rows
    best_step: int | None = None
    probe_bits_before: float | None = None
    probe_bits_after: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def embedding_names(model: PreTrainedModel) -> tuple[str, str | None]:
    """Parameter names of the input rows and, when untied, of the LM head."""
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    inp = names[id(model.get_input_embeddings().weight)]
    head = model.get_output_embeddings()
    if head is None or head.weight is model.get_input_embeddings().weight:
        return inp, None
    return inp, names[id(head.weight)]


def load_frozen(model_dir: Path, device: torch.device) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, trust_remote_code=False, use_safetensors=True
    )
    return model.to(device).eval().requires_grad_(False)


def trainable_rows(alignment: Alignment, n_rows: int, rows: str) -> Tensor:
    """[n_rows] bool: every row, or those the transplant predicted (not copied, not specials)."""
    mask = torch.zeros(n_rows, dtype=torch.bool)
    if rows == "all":
        mask[:] = True
    else:
        mask[[i for i in alignment.predict if i < n_rows]] = True
    return mask


class Rows(nn.Module):
    """The student's embedding matrices: zero-shot rows + a correction shared by trained rows.

    rows = start + mask * (start @ down @ up + shift), per matrix ("input", "output"). Rows
    outside `mask` (copied ones, by default) stay bit-identical to `start`.
    """

    def __init__(self, start: dict[str, Tensor], mask: Tensor, rank: int) -> None:
        super().__init__()
        n, d = start["input"].shape
        assert mask.shape == (n,) and all(m.shape == (n, d) for m in start.values())
        for name, m in start.items():
            self.register_buffer(f"start_{name}", m.detach().to(torch.float32).clone())
        self.register_buffer("mask", mask.to(torch.float32)[:, None])
        self.names = list(start)
        self.shift = nn.ParameterDict({k: nn.Parameter(torch.zeros(d)) for k in start})
        self.down = nn.ParameterDict(
            {k: nn.Parameter(torch.randn(d, rank) / math.sqrt(d)) for k in start}
        )
        self.up = nn.ParameterDict({k: nn.Parameter(torch.zeros(rank, d)) for k in start})

    def forward(self) -> dict[str, Tensor]:
        out = {}
        for k in self.names:
            start = getattr(self, f"start_{k}")
            correction = start @ self.down[k] @ self.up[k] + self.shift[k]
            out[k] = start + self.mask * correction
        return out


@dataclass
class _Target:
    """The teacher's side of one window, and how it pairs with the student's tokens."""

    student: D.Tokenized
    pairing: D.Pairing
    chunk_lp: Tensor  # [n_chunks]
    byte_lp: Tensor  # [n_boundaries, 256]
    hidden: Tensor | None  # [n_boundaries, d]


class Refiner:
    def __init__(
        self,
        model: PreTrainedModel,
        teacher_tok: PreTrainedTokenizerFast,
        student_tok: PreTrainedTokenizerFast,
        matrices: dict[str, Tensor],
        trainable: Tensor,
        texts: list[str],
        config: RefineConfig,
    ) -> None:
        config.check()
        self.model, self.config = model, config
        self.device = next(model.parameters()).device
        self.teacher_tok, self.student_tok = teacher_tok, student_tok
        n_layers = model.config.num_hidden_layers
        self.layer = config.hidden_layer if config.hidden_layer is not None else n_layers // 2
        teacher_rows = model.get_output_embeddings().weight.shape[0]
        self.teacher_first = D.first_bytes(load_vocab(teacher_tok), teacher_rows).to(self.device)
        n = matrices["input"].shape[0]
        self.student_first = D.first_bytes(load_vocab(student_tok), n).to(self.device)
        self.input_name, self.output_name = embedding_names(model)
        self.rows = Rows(matrices, trainable.to(self.device), config.rank).to(self.device)
        self.trained_rows = int(trainable.sum())
        self.optimizer = torch.optim.Adam(self.rows.parameters(), lr=config.lr)
        require_window(texts, config.window_chars)
        windows = cut_windows(texts, config.window_chars)
        self.rng = random.Random(config.seed)
        self.rng.shuffle(windows)
        held = config.probe_windows if len(windows) >= 2 * config.probe_windows else 0
        self.probe_texts = windows[:held] or windows[: config.probe_windows]
        self.probe_kind = "held-out" if held else "training"
        self.train = windows[held:]
        self.cache: dict[int, _Target] = {}
        self._probe_targets: list[_Target] | None = None
        self.step, self.elapsed, self.text_bytes = 0, 0.0, 0

    # -- the two sides ------------------------------------------------------------------------

    def _run(self, ids: list[int], params: dict[str, Tensor] | None) -> tuple[Tensor, Tensor]:
        """Logits [n, V] and the chosen layer's hidden states [n, d] for one sequence."""
        x = torch.tensor([ids], device=self.device)
        kwargs = {"input_ids": x, "output_hidden_states": self.config.hidden_weight > 0}
        out = functional_call(self.model, params, (), kwargs) if params else self.model(**kwargs)
        hidden = out.hidden_states[self.layer][0] if out.hidden_states else out.logits[0, :, :0]
        return out.logits[0], hidden

    def _student_params(self) -> dict[str, Tensor]:
        rows = self.rows()
        params = {self.input_name: rows["input"]}
        if self.output_name is not None:
            params[self.output_name] = rows["output"]
        return params

    @torch.no_grad()
    def _target(self, index: int, windows: list[str]) -> _Target:
        text = windows[index]
        teacher = D.tokenize(self.teacher_tok, text)
        student = D.tokenize(self.student_tok, text)
        pairing = D.pair(teacher, student)
        logits, hidden = self._run(teacher.ids, None)
        ids = torch.tensor(teacher.ids, device=self.device)
        token_lp = D.token_logprobs(logits, ids, teacher.bos)
        chunk_lp = D.chunk_logprobs(
            token_lp, pairing.teacher_chunk.to(self.device), pairing.n_chunks
        )
        at = pairing.teacher_positions.to(self.device)
        byte_lp = D.byte_logprobs(logits[at], self.teacher_first)
        return _Target(student, pairing, chunk_lp, byte_lp, hidden[at] if hidden.numel() else None)

    def loss(self, target: _Target) -> dict[str, Tensor]:
        c, s = self.config, target.student
        logits, hidden = self._run(s.ids, self._student_params())
        ids = torch.tensor(s.ids, device=self.device)
        token_lp = D.token_logprobs(logits, ids, s.bos)
        p = target.pairing
        chunk_lp = D.chunk_logprobs(token_lp, p.student_chunk.to(self.device), p.n_chunks)
        at = p.student_positions.to(self.device)
        parts = {
            "chunk": D.chunk_distance(chunk_lp, target.chunk_lp, c.distance, c.temperature),
            "byte": D.byte_kl(D.byte_logprobs(logits[at], self.student_first), target.byte_lp),
        }
        if target.hidden is not None:
            parts["hidden"] = D.hidden_distance(hidden[at], target.hidden)
        parts["lm"] = -(token_lp if s.bos else token_lp[1:]).mean()
        weights = {
            "chunk": c.chunk_weight,
            "byte": c.byte_weight,
            "hidden": c.hidden_weight,
            "lm": c.lm_weight,
        }
        parts["loss"] = sum(weights[k] * v for k, v in parts.items())
        return parts

    # -- the loop -----------------------------------------------------------------------------

    def fraction(self) -> float:
        c = self.config
        by_steps = self.step / c.steps if c.steps else 0.0
        by_time = self.elapsed / (c.minutes * 60) if c.minutes else 0.0
        return min(1.0, max(by_steps, by_time))

    def _schedule(self) -> float:
        warm = min(1.0, (self.step + 1) / max(1, self.config.warmup))
        return warm * 0.5 * (1 + math.cos(math.pi * self.fraction()))

    def train_step(self) -> float:
        index = self.step % len(self.train)
        if index not in self.cache:
            self.cache[index] = self._target(index, self.train)
            self.text_bytes += len(self.train[index].encode())
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * self._schedule()
        loss = self.loss(self.cache[index])["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.item()

    def _probes(self, cancelled: Callable[[], bool] | None) -> list[_Target]:
        """The probe windows' targets, computed once (a teacher forward pass each)."""
        if self._probe_targets is None:
            targets = []
            for i in range(len(self.probe_texts)):
                _stop_if(cancelled)
                targets.append(self._target(i, self.probe_texts))
            self._probe_targets = targets
        return self._probe_targets

    @torch.no_grad()
    def probe(self, cancelled: Callable[[], bool] | None = None) -> tuple[float, float]:
        """The mean loss on the probe windows and their bits per byte under the student (as
        evaluation counts them); a cancel is honoured between windows."""
        loss, nats, n_bytes = 0.0, 0.0, 0
        for text, target in zip(self.probe_texts, self._probes(cancelled), strict=True):
            _stop_if(cancelled)
            parts = self.loss(target)
            loss += parts["loss"].item()
            # "lm" is the mean over the len(ids) - 1 predicted text tokens
            nats += parts["lm"].item() * (len(target.student.ids) - 1)
            n_bytes += len(text.encode())
        return loss / len(self.probe_texts), nats / math.log(2) / n_bytes

    def fit(
        self,
        progress: Callable[[Tick], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> RefineResult:
        before, bits_before = self.probe(cancelled)
        every = self.config.probe_every
        best = (bits_before, 0, self._rows_state()) if every else None
        start = time.perf_counter()
        while self.fraction() < 1.0:
            _stop_if(cancelled)
            loss = self.train_step()
            self.elapsed = time.perf_counter() - start
            if progress is not None:
                progress(Tick(self.step, self.fraction(), loss, self.elapsed))
            if every and (self.step % every == 0 or self.fraction() >= 1.0):
                best = self._best(best, cancelled)
        if best is not None:
            self.rows.load_state_dict(best[2])
        after, _ = self.probe(cancelled)
        return RefineResult(
            text_bytes=self.text_bytes,
            windows=min(self.step, len(self.train)),
            steps=self.step,
            minutes=round(self.elapsed / 60, 2),
            rows=self.config.rows,
            trained_rows=self.trained_rows,
            loss_before=round(before, 4),
            loss_after=round(after, 4),
            probe=self.probe_kind,
            config=asdict(self.config),
            best_step=best[1] if best else None,
            probe_bits_before=round(bits_before, 4) if every else None,
            probe_bits_after=round(best[0], 4) if best else None,
        )

    def _best(
        self, best: tuple[float, int, dict] | None, cancelled: Callable[[], bool] | None
    ) -> tuple[float, int, dict]:
        """(probe bits per byte, step, a copy of the rows' state) of the best rows so far."""
        _, bits = self.probe(cancelled)
        if best is not None and best[0] <= bits:
            return best
        return bits, self.step, self._rows_state()

    def _rows_state(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.rows.state_dict().items()}

    def matrices(self) -> dict[str, Tensor]:
        """The refined rows, on the CPU: same keys and shapes as the matrices given."""
        with torch.no_grad():
            return {k: m.cpu() for k, m in self.rows().items()}


def _stop_if(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled during refine")


def with_rows(model: PreTrainedModel, matrices: dict[str, Tensor]) -> PreTrainedModel:
    """A copy of `model` whose embedding rows are `matrices`: the student as a plain model,
    for evaluation. The body's tensors are copied, never changed."""
    student = copy.deepcopy(model)
    student.resize_token_embeddings(matrices["input"].shape[0], mean_resizing=False)
    student.get_input_embeddings().weight.data.copy_(matrices["input"])
    if "output" in matrices:
        student.get_output_embeddings().weight.data.copy_(matrices["output"])
    return student


def check_teacher(student: Checkpoint, teacher: Checkpoint) -> None:
    """The student's body must be the teacher's, tensor for tensor: refining against another
    model would teach the rows to imitate a model they are not used with."""
    embeddings = {student.input_name, student.output_name}
    body = {n: i for n, i in student.tensors.items() if n not in embeddings}
    theirs = {n for n in teacher.tensors if n not in {teacher.input_name, teacher.output_name}}
    if set(body) != theirs:
        raise InputError("the teacher is not the base model this checkpoint came from")
    for name, info in body.items():
        other = teacher.tensors[name]
        if info.shape != other.shape or not torch.equal(student.read(name), teacher.read(name)):
            raise InputError(
                f"the teacher is not the base model this checkpoint came from ({name} differs)"
            )


@dataclass
class Refined:
    refiner: Refiner
    result: RefineResult

    def model_with(self, matrices: dict[str, Tensor]) -> PreTrainedModel:
        """The frozen body carrying other rows (the zero-shot ones, to score them)."""
        return with_rows(self.refiner.model, matrices)


def refine_rows(
    setup: Setup,
    matrices: dict[str, Tensor],
    config: RefineConfig,
    progress: Callable[[Tick], None],
    cancelled: Callable[[], bool],
) -> Refined:
    """Distil the base model into the predicted rows on the request's refine texts; only
    rows, never the body, change."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_frozen(setup.ckpt.path, device)
    mask = trainable_rows(setup.alignment, matrices["input"].shape[0], config.rows)
    texts = setup.inputs.refine_texts
    refiner = Refiner(model, setup.base_tok, setup.new_tok, matrices, mask, texts, config)
    return Refined(refiner, refiner.fit(progress=progress, cancelled=cancelled))
