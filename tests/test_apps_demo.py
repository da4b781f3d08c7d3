"""The README's main job: `transferlab demo` writes a report that shows every figure it made."""

from __future__ import annotations

import re

import pytest

from transferlab.apps.demo import run_demo


@pytest.mark.slow
def test_demo_report(tmp_path):
    lines: list[str] = []
    report = run_demo(tmp_path / "demo", quiet=True, log=lines.append)
    html = report.read_text()
    srcs = re.findall(r"<img src='([^']+)'", html)
    assert len(srcs) >= 8
    for src in srcs:
        assert (report.parent / src).is_file(), src  # relative links that resolve
    text = "\n".join(lines)
    assert "espresso" in text and re.search(r"chelsea: (tiger cat|Egyptian cat|tabby)", text)
    feat, pix = (float(x) for x in re.findall(r"features: (\d+\.\d+)%.*?pixels: +(\d+\.\d+)%", text, re.S)[0])
    assert feat > 90 and pix > 90  # both real classifiers of the 1,797 digits
    assert ("winner: pretrained" in text) == (feat > pix)
    assert "SUCCESS (scored on the saved 8-bit PNG)" in text
    sections = [float(x) for x in re.findall(r"^== .* \((\d+\.\d) s\)$", text, re.M)]
    assert len(sections) == 5
    total = float(re.fullmatch(r"total: (\d+\.\d) s \(.*\)", lines[-1]).group(1))  # printed last
    assert total >= sum(sections) - 0.5 and "Total:" in html  # every section counted, rounding aside
