"""The HTML pages: upload, result (+ save), catalog (filter, edit, delete), and the photo files.

Forms post and redirect (303) so a reload never saves twice; every error comes back as the
upload page with the message, with the HTTP status of the error.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from .api import analyze, duplicate_message, photo_url, services
from .service import InputError, Services, ago
from .storage import SHA_RE

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["ago"] = ago
templates.env.filters["pct"] = lambda p: f"{100 * p:.0f}%" if p >= 0.01 else "<1%"
templates.env.globals["photo_url"] = photo_url
IMMUTABLE = {"cache-control": "public, max-age=31536000, immutable"}


def render(request: Request, name: str, status: int = 200, **ctx):
    svc: Services = request.app.state.svc
    ctx.setdefault("total", svc.catalog.count_pets())
    ctx.setdefault("max_mb", svc.settings.max_upload_mb)
    return templates.TemplateResponse(request, name, ctx, status_code=status)


def error_page(request: Request, status: int, message: str):
    return render(request, "index.html", status=status, error=message)


@router.get("/")
def index(request: Request, svc: Services = Depends(services)):
    return render(request, "index.html", recent=svc.catalog.list_pets(limit=6))


@router.post("/predict")
async def predict_page(request: Request, file: UploadFile = File(...), svc: Services = Depends(services)):
    r = await analyze(file, svc)
    top_label = r.analysis.top[0][0]
    dups = [(d, duplicate_message(d)) for d in r.duplicates]
    return render(request, "result.html", r=r, a=r.analysis, dups=dups, classes=svc.model.classes,
                  selected=top_label)


@router.post("/pets")
def save_page(photo: str = Form(...), name: str = Form(...), breed: str = Form(...),
              svc: Services = Depends(services)):
    pet = svc.save(photo, name, breed)
    return RedirectResponse(f"/catalog?saved={pet.id}#pet-{pet.id}", status_code=303)


@router.get("/catalog")
def catalog_page(request: Request, breed: str | None = None, saved: int | None = None,
                 svc: Services = Depends(services)):
    pets = svc.catalog.list_pets(breed or None)
    just_saved = next((p for p in pets if p.id == saved), None)
    return render(request, "catalog.html", pets=pets, breeds=svc.catalog.breeds(), breed=breed or "",
                  saved=just_saved)


@router.get("/pets/{pet_id}/edit")
def edit_page(request: Request, pet_id: int, svc: Services = Depends(services)):
    pet = svc.get(pet_id)
    return render(request, "edit.html", pet=pet, classes=_choices(svc, pet.breed))


@router.post("/pets/{pet_id}/edit")
def edit_save(request: Request, pet_id: int, name: str = Form(...), breed: str = Form(...),
              svc: Services = Depends(services)):
    try:
        svc.update(pet_id, name, breed)
    except InputError as e:
        if e.status == 404:
            raise
        pet = svc.get(pet_id)
        return render(request, "edit.html", status=e.status, pet=pet, classes=_choices(svc, pet.breed), error=e.message)
    return RedirectResponse(f"/catalog#pet-{pet_id}", status_code=303)


@router.post("/pets/{pet_id}/delete")
def delete_page(pet_id: int, svc: Services = Depends(services)):
    svc.delete(pet_id)
    return RedirectResponse("/catalog", status_code=303)


def _choices(svc: Services, current: str) -> list[str]:
    """The model's classes, plus the pet's current breed if an earlier model named it."""
    return svc.model.classes if current in svc.model.classes_set else [current, *svc.model.classes]


@router.get("/media/{name}")
def media(name: str, svc: Services = Depends(services)):
    sha, _, ext = name.partition(".")
    if not SHA_RE.match(sha) or svc.catalog.photo_ext(sha) != f".{ext}":
        raise InputError(404, "no such photo")
    path = svc.media.photo_path(sha, f".{ext}")
    if not path.is_file():
        raise InputError(404, "no such photo")
    return FileResponse(path, headers=IMMUTABLE)


@router.get("/thumbs/{name}")
def thumb(name: str, svc: Services = Depends(services)):
    sha = name.removesuffix(".jpg")
    path = svc.media.thumb_path(sha) if SHA_RE.match(sha) else None
    if path is None or not path.is_file():
        raise InputError(404, "no such thumbnail")
    return FileResponse(path, headers=IMMUTABLE)


@router.get("/healthz")
def health(svc: Services = Depends(services)):
    return {"ok": True, "pets": svc.catalog.count_pets(), "database": svc.catalog.dialect}
