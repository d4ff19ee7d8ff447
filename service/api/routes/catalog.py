"""What the server offers: models in its store, hypernetworks, transplant methods."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from hypernet.errors import InputError
from hypernet.methods import METHODS
from hypernet.network.model import read_meta

from ...schemas import HypernetList, HypernetOut, MethodList, MethodOut, ModelList, NamedEntry
from ...services import Services
from ..deps import Authorized, ServicesDep

router = APIRouter(dependencies=[Authorized], tags=["catalog"])


@router.get("/models", response_model=ModelList)
@router.head("/models", response_model=ModelList)
async def list_models(services: ServicesDep) -> ModelList:
    return ModelList(models=[NamedEntry(**m) for m in services.catalog.models()])


def _hypernets(services: Services) -> list[HypernetOut]:
    found = []
    for folder in services.catalog.hypernets():
        try:
            meta = read_meta(folder)
        except InputError:
            continue  # a broken folder is not offered
        held_out = meta.scores.get("held_out") or [None]
        found.append(
            HypernetOut(
                name=folder.name,
                base_model=meta.base_model,
                architecture=meta.fingerprint.architecture,
                rows=meta.fingerprint.rows,
                steps=meta.recipe.get("steps_done"),
                held_out=held_out[-1],
            )
        )
    return found


@router.get("/hypernets", response_model=HypernetList)
@router.head("/hypernets", response_model=HypernetList)
async def list_hypernets(services: ServicesDep) -> HypernetList:
    return HypernetList(hypernets=await run_in_threadpool(_hypernets, services))


@router.get("/methods", response_model=MethodList)
@router.head("/methods", response_model=MethodList)
async def list_methods() -> MethodList:
    return MethodList(
        methods=[
            MethodOut(name=spec.name, description=spec.summary, needs=spec.needs)
            for spec in METHODS.values()
        ]
    )
