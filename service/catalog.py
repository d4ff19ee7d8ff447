"""What a request may name, resolved safely: store names, bundled models, hub ids, uploads.

A request never names a server path: names are checked against a pattern and looked up inside
the server's own folders, so `../../etc` or `/root` are refused before anything is opened.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from hypernet.errors import InputError
from hypernet.io import open_checkpoint
from hypernet.network.store import SHIPPED, list_hypernets, named_hypernet
from hypernet.network.store import store as default_hypernet_store
from hypernet.sources import BUNDLED, bundled_gguf, hub_model, hub_tokenizer, resolve_tokenizer

from .config import Settings
from .storage import Known, Storage, older

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
# An absolute path of two or more parts, not inside a URL or a relative path ("org/model").
_SEGMENT = r"[^\s/'\"`()\[\]{},;:]+"
ABSOLUTE_PATH = re.compile(rf"(?<![\w.~:/-])(?:/{_SEGMENT})+/({_SEGMENT})")


def redact(text: str) -> str:
    """A message fit for a client: every absolute path cut to its last part
    (`/srv/data/uploads/ab12/tokenizer.json` -> `tokenizer.json`). Settings keep the
    server's folders absolute, so the paths built from them are caught."""
    return ABSOLUTE_PATH.sub(r"\1", text)


def _safe(name: str) -> bool:
    return ".." not in name and bool(NAME.match(name) or HUB_ID.match(name))


class Catalog:
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        """`storage`: where uploads missing from this machine's uploads folder are fetched."""
        self.settings, self.storage = settings, storage

    def _upload(self, name: str) -> Path:
        """An upload's folder on this machine, fetched from the store first if it is not
        here yet (a worker or API process that did not receive the upload itself)."""
        folder = self.settings.uploads_dir / name
        if not folder.is_dir() and self.storage is not None:
            self.storage.fetch_upload(name, folder)
        return folder

    def sweep_uploads(self, known: Known, older_than: float) -> int:
        """This machine's uploads folder, entries older than `older_than` seconds: the temp
        folders of a save or fetch that never finished, and the folders whose upload has no
        row (deleted after this machine fetched it, or whose row never committed)."""
        root, cutoff = self.settings.uploads_dir, time.time() - older_than
        old = [p for p in (root.iterdir() if root.is_dir() else []) if older(p, cutoff)]
        temps = [p for p in old if p.name.startswith(".") and p.name.endswith(".tmp")]
        ids = [p.name for p in old if UPLOAD_ID.fullmatch(p.name)]
        doomed = temps + [root / name for name in set(ids) - known(ids)]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        return len(doomed)

    @property
    def hypernets_dir(self) -> Path:
        return self.settings.hypernets_dir or default_hypernet_store().absolute()

    # --- resolution -------------------------------------------------------------------------
    def model(self, name: str) -> str:
        """A model folder whose embeddings were found, or a bundled model's name: the job
        converts a bundled model on first use, validation only finds its file (InputError
        otherwise)."""
        if not _safe(name):
            raise InputError(f"model {name!r} is not a store name, bundled model or hub id")
        store = self.settings.models_dir / name
        if NAME.match(name) and (store / "config.json").is_file():
            folder = store
        elif name in BUNDLED:
            bundled_gguf(name)
            return name
        elif HUB_ID.match(name):
            folder = hub_model(name)
        else:
            raise InputError(
                f"model {name!r} not found: not in the model store, not bundled "
                f"({', '.join(BUNDLED)}), not a hub id"
            )
        open_checkpoint(folder)  # identifiable embeddings, safetensors only
        return str(folder)

    def tokenizer(self, name: str) -> str:
        """A tokenizer folder or file whose tokenizer.json parses, or a bundled model's name
        (its tokenizer comes with the model, converted by the job)."""
        if UPLOAD_ID.match(name) and (self._upload(name) / "tokenizer.json").is_file():
            return str(resolve_tokenizer(str(self.settings.uploads_dir / name)))
        if not _safe(name):
            raise InputError(f"tokenizer {name!r} is not an upload id, store name or hub id")
        store = self.settings.tokenizers_dir
        if NAME.match(name) and (store / name / "tokenizer.json").is_file():
            return str(resolve_tokenizer(str(store / name)))
        if NAME.match(name) and (store / f"{name}.json").is_file():
            return str(resolve_tokenizer(str(store / f"{name}.json")))
        if name in BUNDLED:
            bundled_gguf(name)
            return name
        if HUB_ID.match(name):
            return str(hub_tokenizer(name))
        raise InputError(f"tokenizer {name!r} not found: no upload, store entry or hub id")

    def text(self, name: str, what: str = "eval text") -> Path:
        """An uploaded text or a corpus file; `what` names its use in the error."""
        if UPLOAD_ID.match(name) and (self._upload(name) / "text.txt").is_file():
            return self.settings.uploads_dir / name / "text.txt"
        corpora = self.settings.corpora_dir
        if corpora is not None and NAME.match(name) and ".." not in name:
            file = corpora / f"{name}.txt"
            if file.is_file():
                return file
        raise InputError(f"{what} {name!r} not found: no uploaded text or corpus of that name")

    @property
    def hypernet_roots(self) -> list[Path]:
        """The server's store, then the hypernetworks that ship with tokengraft."""
        return [self.hypernets_dir, SHIPPED]

    def hypernet(self, name: str) -> Path:
        """By name only (never a path), and with no server path in the error."""
        if not NAME.match(name) or ".." in name:
            raise InputError(f"hypernetwork {name!r} is not a store name")
        found = named_hypernet(name, self.hypernet_roots)
        if found is None:
            raise InputError(f"no hypernetwork {name!r}: see GET /hypernets")
        return found

    # --- listings ---------------------------------------------------------------------------
    def models(self) -> list[dict]:
        found = [{"name": n, "source": "bundled"} for n in BUNDLED]
        store = self.settings.models_dir
        if store.is_dir():
            found += [
                {"name": p.name, "source": "store"}
                for p in sorted(store.iterdir())
                if (p / "config.json").is_file() and NAME.match(p.name)
            ]
        return found

    def tokenizers(self) -> list[dict]:
        store = self.settings.tokenizers_dir
        if not store.is_dir():
            return []
        names = [p.name for p in sorted(store.iterdir()) if (p / "tokenizer.json").is_file()]
        names += [p.stem for p in sorted(store.glob("*.json"))]
        return [{"name": n, "source": "store"} for n in names if NAME.match(n)]

    def corpora(self) -> list[str]:
        corpora = self.settings.corpora_dir
        return sorted(p.stem for p in corpora.glob("*.txt")) if corpora and corpora.is_dir() else []

    def hypernets(self) -> list[Path]:
        return list_hypernets(self.hypernet_roots)
