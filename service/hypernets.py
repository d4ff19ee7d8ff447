"""Training a hypernetwork as a job: the request checked before it is queued, the Trainer run
in a work folder that outlives the attempt, and the result published into the store.

A worker killed mid-training loses at most `checkpoint_every` steps: the job's work folder
(`<jobs>/<id>/train`, not a temp dir) keeps the Trainer's checkpoint and a copy of the texts,
and the next attempt resumes from them with the saved recipe. The store only ever holds whole
networks: the files are gathered under `<store>/.incoming/` (not a store entry: no
hypernet.json directly inside) and renamed into place at once. A network carries the id of the
job that published it (`origin.json`), so an attempt that finds its own network already there
(its predecessor died right after publishing) reports it instead of training again.

Texts are copied in as `<name>.txt`: the Trainer names a corpus by its file's stem, so held-out
scores and `corpus_weights` use the names the user gave (every upload's file is `text.txt`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path

from hypernet.errors import Cancelled, InputError
from hypernet.files import atomic_write
from hypernet.network.model import CONFIG, WEIGHTS, HyperConfig, read_meta
from hypernet.network.training import TrainConfig, Trainer, latest_checkpoint, resume_recipe
from hypernet.sources import resolve_model

from .catalog import Catalog
from .models import JobStatus
from .queue import Claim, Queue
from .storage import Storage

log = logging.getLogger("tokengraft.hypernets")

WORK = "train"  # the job's work folder, kept across attempts
INCOMING = ".incoming"  # under the store: networks being published
ORIGIN = "origin.json"  # in a published network: the job that trained it
MAX_STEPS = 1_000_000  # the step bound of a run given minutes only
TRAIN_OPTIONS = {f.name for f in fields(TrainConfig)} - set(TrainConfig.BUDGET)
NET_OPTIONS = {f.name for f in fields(HyperConfig)} - {"dim", "tied"}  # set from the base

Progress = Callable[..., None]  # (stage, fraction, detail=None, always=False), see worker.py


# --- the request -----------------------------------------------------------------------------
def budget(request: Mapping) -> dict:
    """TrainConfig's budget: minutes alone run up to MAX_STEPS, steps alone without a time
    limit (as refine's budget does)."""
    return {"steps": request.get("steps") or MAX_STEPS, "max_minutes": request.get("minutes")}


def configs(request: Mapping) -> tuple[TrainConfig, HyperConfig]:
    """The recipe a fresh run starts with: the options the user set over the library's
    defaults."""
    train = {k: v for k, v in request.items() if k in TRAIN_OPTIONS and v is not None}
    net = {k: v for k, v in request.items() if k in NET_OPTIONS and v is not None}
    return TrainConfig(**budget(request), **train), HyperConfig(**net)


def check(catalog: Catalog, request: Mapping, memory_bytes: int | None) -> None:
    """Everything the Trainer would refuse at the start of the job, refused now: the recipe
    (its sizes within the bounds of `TrainConfig` and a network that fits in `memory_bytes`),
    the model, and texts that are unknown, not UTF-8 or too short to hold out their end."""
    if ".." in request["name"]:
        raise InputError(f"hypernetwork name {request['name']!r} may not contain '..'")
    config, hyper = configs(request)
    names = list(request["texts"])
    if len(set(names)) < len(names):
        raise InputError("each training text may be named once")
    config.check(names)
    hyper.check(memory_bytes)
    _check_recipe(config)
    catalog.model(request["model"])
    for name in names:
        _require_length(name, _read(name, catalog.text(name, "training text")), config)


def _check_recipe(config: TrainConfig) -> None:
    if config.vocab_min > config.vocab_max:
        raise InputError(f"vocab_min {config.vocab_min} is above vocab_max {config.vocab_max}")
    if not (config.lm_weight > 0 or config.rec_weight > 0):
        raise InputError(
            "lm_weight or rec_weight must be positive (aux alone may have nothing to learn from)"
        )


def _read(name: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"training text {name!r} is not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise InputError(f"cannot read training text {name!r}: {e.strerror or e}") from None


def _require_length(name: str, text: str, config: TrainConfig) -> None:
    """The Trainer's own rule: the held-out end may not be longer than what is left."""
    held = config.heldout_chars
    if len(text) - held < held:
        raise InputError(
            f"training text {name!r} is too short: {len(text)} characters, and it needs at "
            f"least {2 * held} (its last heldout_chars={held} are held out for evaluation)"
        )


def taken(catalog: Catalog, queue: Queue, name: str) -> str | None:
    """Why no network can be trained under `name`, if none can: the store (or the shipped
    networks the catalog lists) has one, or an unfinished job is training one."""
    if name in {p.name for p in catalog.hypernets()} or (catalog.hypernets_dir / name).exists():
        return f"a hypernetwork named {name!r} exists already"
    if (job_id := queue.training(name)) is not None:
        return taken_by(job_id, name)
    return None


def taken_by(job_id: str, name: str) -> str:
    """Why a request for `name` is refused while job `job_id` trains it."""
    return f"job {job_id} is already training a hypernetwork named {name!r}"


# --- the job ---------------------------------------------------------------------------------
class Training:
    """One attempt at a hypernet job, as the worker runs it (see worker.py's `_Transplant`)."""

    def __init__(self, catalog: Catalog, storage: Storage, claim: Claim) -> None:
        self.catalog, self.storage, self.claim = catalog, storage, claim
        self.request = claim.request
        self.target = catalog.hypernets_dir / self.request["name"]
        self.resumed_from: int | None = None

    def run(self, progress: Progress, cancelled: Callable[[], bool]) -> tuple[dict, None]:
        """Train (or resume), publish, and give the job's result; no artifacts."""
        job_id = self.claim.job_id
        if not published_by(self.target, job_id):
            folder = self.storage.scratch(job_id, WORK)
            progress("prepare", 0.0)
            trainer = self._trainer(folder)
            if trainer.step:
                self.resumed_from = trainer.step
                fraction = trainer.progress_fraction()  # always kept, as is the next step's
                progress("train", fraction, {"resumed_from": trainer.step}, True)
            try:
                trainer.fit(progress=False, report=_reporter(progress), cancelled=cancelled)
            except InputError as e:
                raise InputError(self._named(str(e), folder)) from None
            if cancelled():  # nothing reaches the store once a cancel is asked for
                raise Cancelled("training cancelled")
            progress("publish", 0.0)
            publish(folder, self.target, job_id)
        progress("publish", 1.0)
        return {"hypernet": summary(self.target, self.resumed_from)}, None

    def cleanup(self, status: JobStatus | None) -> None:
        """The work folder goes once the job is over; while it may run again (requeued, given
        back, or claimed by a newer attempt: None) it is what that attempt resumes from."""
        if status is not None and JobStatus(status).terminal:
            self.storage.remove(self.claim.job_id, WORK)
            shutil.rmtree(_incoming(self.target, self.claim.job_id), ignore_errors=True)

    def _trainer(self, folder: Path) -> Trainer:
        """A Trainer resumed from the folder's checkpoint, or a fresh one in a clean folder."""
        model = resolve_model(self.catalog.model(self.request["model"]))  # converts, once
        resume = has_checkpoint(folder)
        if not resume:
            shutil.rmtree(folder)
            folder.mkdir()
        corpus = self._corpus(folder)
        if resume:
            config, hyper, _ = resume_recipe(folder, budget(self.request), None)
        else:
            config, hyper = configs(self.request)

        def note(message: str) -> None:
            log.info("job %s: %s", self.claim.job_id, message)

        try:
            trainer = Trainer(
                model, corpus, folder, config, hyper, base_name=self.request["model"], log=note
            )
            if resume:
                trainer.resume()
        except InputError as e:
            raise InputError(self._named(str(e), folder)) from None
        return trainer

    def _corpus(self, folder: Path) -> list[Path]:
        """The texts as `<name>.txt` in the work folder: linked or copied in once, so that a
        resumed run reads what the first attempt read under the same names, wherever the
        shared folder is mounted (the checkpoint's own list holds absolute paths)."""
        corpus = folder / "corpus"
        corpus.mkdir(exist_ok=True)
        files = []
        for name in self.request["texts"]:
            file = corpus / f"{name}.txt"
            if not file.is_file():
                _link_or_copy(self.catalog.text(name, "training text"), file)
            files.append(file)
        return files

    def _named(self, message: str, folder: Path) -> str:
        """A library message with the server's paths replaced by the names the user gave."""
        for name in self.request["texts"]:
            file = folder / "corpus" / f"{name}.txt"
            for path in (file.resolve(), file):
                message = message.replace(str(path), repr(name))
        for path in (folder.resolve(), folder):
            message = message.replace(str(path), "the job's work folder")
        return message


def _reporter(progress: Progress) -> Callable[[dict], None]:
    """Trainer events as progress ticks of stage "train"; held-out scores are never dropped
    by the throttle."""

    def report(event: dict) -> None:
        detail = {k: _short(v) for k, v in event.items() if k != "fraction"}
        progress("train", event["fraction"], detail, "held_out" in event)

    return report


def _short(value: object) -> object:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def has_checkpoint(folder: Path) -> bool:
    try:
        latest_checkpoint(folder)
    except InputError:
        return False
    return True


def _link_or_copy(source: Path, file: Path) -> None:
    """A hard link where both are on one filesystem, else a copy; renamed into place so that
    a kill mid-copy never leaves a truncated text behind."""
    with atomic_write(file) as part:
        try:
            os.link(source, part)
        except OSError:
            shutil.copyfile(source, part)


# --- the store -------------------------------------------------------------------------------
def _incoming(target: Path, job_id: str) -> Path:
    return target.parent / INCOMING / f"{target.name}.{job_id}"


def published_by(target: Path, job_id: str) -> bool:
    try:
        origin = json.loads((target / ORIGIN).read_text())
    except (OSError, ValueError):
        return False
    return (target / CONFIG).is_file() and origin.get("job") == job_id


def publish(folder: Path, target: Path, job_id: str) -> None:
    """The exported network (hypernet.safetensors + hypernet.json in `folder`) into the store
    as `target`, all at once: gathered under `.incoming/`, then one rename. The work folder
    keeps its files until the job is recorded as succeeded."""
    incoming = _incoming(target, job_id)
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    (incoming / ORIGIN).write_text(json.dumps({"job": job_id}) + "\n")
    for name in (WEIGHTS, CONFIG):
        shutil.copyfile(folder / name, incoming / name)
    try:
        if target.exists():
            raise FileExistsError(target)
        incoming.rename(target)  # fails if a non-empty folder took the name meanwhile
    except OSError:
        shutil.rmtree(incoming, ignore_errors=True)
        if not published_by(target, job_id):
            raise InputError(
                f"a hypernetwork named {target.name!r} appeared in the store while this job "
                "trained; nothing was published"
            ) from None


def summary(target: Path, resumed_from: int | None) -> dict:
    """A published network as the job's result: what GET /hypernets shows, and more."""
    meta = read_meta(target)
    held_out = meta.scores.get("held_out") or [None]
    recipe = meta.recipe
    return {
        "name": target.name,
        "base_model": meta.base_model,
        "steps": recipe.get("steps_done"),
        "minutes": recipe.get("minutes"),
        "tokens_seen": recipe.get("tokens_seen"),
        "device": recipe.get("device"),
        "held_out": held_out[-1],
        "resumed_from": resumed_from,
    }
