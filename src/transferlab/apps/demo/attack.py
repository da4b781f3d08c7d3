"""Demo section: an adversarial example, chelsea the cat turned into a golden retriever."""

from __future__ import annotations

from pathlib import Path


def attack_section(out_dir: Path, quiet: bool = True) -> dict:
    """Chelsea → golden retriever, targeted PGD at ε = 2/255."""
    from PIL import Image
    from skimage import data

    from ...attack.single import attack_image
    from ...report.text import attack_lines

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "chelsea.png"
    Image.fromarray(data.chelsea()).save(src)
    r = attack_image(src, "efficientnet_lite0", target="golden retriever", method="pgd", eps=2 / 255,
                     out=out_dir / "chelsea_to_golden_retriever.png",
                     figure=out_dir / "attack_chelsea_golden_retriever.png", progress=not quiet)
    return {"title": "Adversarial example: chelsea → golden retriever (PGD, ε = 2/255)",
            "figures": [r["figure"]], "text": attack_lines(r), "result": r}
