"""The checkpoint's README.md: where it came from and what quality it kept.

Rendered with `huggingface_hub.ModelCard` from `templates/model_card.md`, so the metadata
block is what the hub expects and the prose can be edited without touching code.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"


def render(report: dict) -> str:
    """The card for a transplant report (as `Report.to_dict()` gives it)."""
    data = ModelCardData(library_name="transformers", tags=["tokengraft", "tokenizer-transplant"])
    method = {k: report.get(k) for k in ("method", "options", "hypernet")}
    card = ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        r=report,
        eval_file=Path(report["eval"]["text"]).name if report.get("eval") else "",
        method_json=json.dumps(method, indent=2),
    )
    return str(card)
