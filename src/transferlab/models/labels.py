"""ImageNet class names and the fuzzy class lookup every command uses (``siamese`` -> ``Siamese cat``)."""

from __future__ import annotations

import re
from functools import lru_cache

from ..errors import UnknownClass


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

