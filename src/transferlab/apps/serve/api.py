"""The JSON API: the same catalog for scripts (OpenAPI docs at /docs)."""

from __future__ import annotations

import json
from datetime import datetime

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict

from .db import Duplicate, Pet
from .service import InputError, Services, UploadResult, ago

router = APIRouter(prefix="/api", tags=["api"])
CHUNK = 1 << 20


def services(request: Request) -> Services:
    return request.app.state.svc


class Score(BaseModel):
    label: str
    score: float


class PetOut(BaseModel):
    id: int
    name: str
    breed: str
    predicted: str
    score: float
    photo: str
    photo_url: str
    thumbnail_url: str
    created_at: datetime
    updated_at: datetime


class DuplicateOut(BaseModel):
    pet: PetOut
    similarity: float
    message: str


class PredictOut(BaseModel):
    photo: str
    photo_url: str
    top: list[Score]
    unsure: bool
    threshold: float
    duplicate_threshold: float
    duplicates: list[DuplicateOut]
    heatmap: str | None


class PetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    breed: str | None = None


class ModelOut(BaseModel):
    classes: list[str]
    threshold: float
    duplicate_threshold: float
    max_upload_mb: float
    info: dict


def photo_url(pet_or_sha, ext: str | None = None) -> str:
    if isinstance(pet_or_sha, Pet):
        return f"/media/{pet_or_sha.sha256}{pet_or_sha.ext}"
    return f"/media/{pet_or_sha}{ext}"


def pet_out(pet: Pet) -> PetOut:
    return PetOut(id=pet.id, name=pet.name, breed=pet.breed, predicted=pet.predicted, score=pet.score,
                  photo=pet.sha256, photo_url=photo_url(pet), thumbnail_url=f"/thumbs/{pet.sha256}.jpg",
                  created_at=pet.created_at, updated_at=pet.updated_at)


def duplicate_message(d: Duplicate) -> str:
    return f"this may be {d.pet.name}, added {ago(d.pet.created_at)}"


def predict_out(r: UploadResult, svc: Services) -> PredictOut:
    a = r.analysis
    dups = [DuplicateOut(pet=pet_out(d.pet), similarity=round(d.similarity, 4), message=duplicate_message(d))
            for d in r.duplicates]
    return PredictOut(photo=r.photo.sha256, photo_url=photo_url(r.photo.sha256, r.photo.ext),
                      top=[Score(label=k, score=v) for k, v in a.top], unsure=a.unsure, threshold=a.threshold,
                      duplicate_threshold=svc.settings.duplicate_threshold, duplicates=dups, heatmap=a.heatmap)


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refused (413) as soon as they pass ``limit``."""
    chunks, size = [], 0
    while chunk := await file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise InputError(413, f"the file is larger than {limit / 2**20:g} MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def analyze(file: UploadFile, svc: Services, heatmap: bool = True) -> UploadResult:
    data = await read_upload(file, svc.settings.max_upload_bytes)
    return await run_in_threadpool(svc.analyze_upload, data, heatmap)


@router.post("/predict", response_model=PredictOut)
async def predict(file: UploadFile = File(..., description="a photo (JPEG, PNG, WebP, GIF, BMP, TIFF)"),
                  heatmap: bool = Query(True, description="compute the Grad-CAM heat map (a data: URL)"),
                  svc: Services = Depends(services)):
    """Top breeds, "not sure", possible duplicates and the heat map. The photo is kept as a
    pending upload (for a day) so ``POST /api/pets`` can save it by its ``photo`` hash."""
    return predict_out(await analyze(file, svc, heatmap), svc)


@router.get("/pets", response_model=list[PetOut])
def list_pets(breed: str | None = None, limit: int = Query(1000, ge=1, le=10000), offset: int = Query(0, ge=0),
              svc: Services = Depends(services)):
    """Newest first; ``breed`` filters."""
    return [pet_out(p) for p in svc.catalog.list_pets(breed, limit, offset)]


@router.post("/pets", response_model=PetOut, status_code=201)
async def create_pet(name: str = Form(...), breed: str | None = Form(None),
                     photo: str | None = Form(None, description="sha256 from /api/predict"),
                     file: UploadFile | None = File(None, description="or the photo itself"),
                     svc: Services = Depends(services)):
    """Save a pet from an earlier prediction (``photo``) or a new upload (``file``). ``breed``
    defaults to the model's top guess."""
    if (photo is None) == (file is None):
        raise InputError(422, "give exactly one of 'photo' (sha256 from /api/predict) or 'file'")
    if file is not None:
        r = await analyze(file, svc, heatmap=False)
        photo, guess = r.photo.sha256, r.analysis.top[0][0]
    else:
        guess = None
    if not breed:
        breed = guess or await run_in_threadpool(_stored_guess, svc, photo)
    return pet_out(await run_in_threadpool(svc.save, photo, name, breed))


def _stored_guess(svc: Services, sha: str) -> str:
    return svc.catalog.predicted(sha) or ""


@router.get("/pets.csv", response_class=PlainTextResponse)
def pets_csv(breed: str | None = None, svc: Services = Depends(services)):
    """``path,label`` with absolute photo paths: feed it to ``transferlab train``."""
    return PlainTextResponse(svc.csv_text(breed), media_type="text/csv",
                             headers={"content-disposition": 'attachment; filename="pets.csv"'})


@router.get("/pets/{pet_id}", response_model=PetOut)
def get_pet(pet_id: int, svc: Services = Depends(services)):
    return pet_out(svc.get(pet_id))


@router.patch("/pets/{pet_id}", response_model=PetOut)
def patch_pet(pet_id: int, patch: PetPatch, svc: Services = Depends(services)):
    return pet_out(svc.update(pet_id, patch.name, patch.breed))


@router.delete("/pets/{pet_id}", status_code=204)
def delete_pet(pet_id: int, svc: Services = Depends(services)):
    svc.delete(pet_id)
    return Response(status_code=204)


@router.get("/model", response_model=ModelOut)
def model_info(svc: Services = Depends(services)):
    return ModelOut(classes=svc.model.classes, threshold=svc.model.threshold,
                    duplicate_threshold=svc.settings.duplicate_threshold,
                    max_upload_mb=svc.settings.max_upload_mb, info=json.loads(json.dumps(svc.model.info, default=str)))
