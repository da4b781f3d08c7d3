"""Text for people: what the CLI (and the demo) print, as pure functions over results."""

from __future__ import annotations


def backbones_table(rows: list[dict]) -> str:
    """The bundled backbones as an aligned table, then how to use online ones."""
    head = ("name", "kind", "available", "params (M)", "feature dim", "input")
    body = [(r["name"], r["kind"], "yes" if r["available"] else "no: pip install", str(r.get("params_m", "")),
             str(r.get("feature_dim", "")), str(r.get("input_size", ""))) for r in rows if r["kind"] == "bundled"]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (head, *body)]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:], "",
                      "Online (when the machine is online; weights go to torchvision's / timm's cache):",
                      "  any torchvision classifier name (resnet50, vgg16, mobilenet_v3_large, ...) and timm:<name>.",
                      "  Offline, use --weights PATH with a local state dict for those architectures."])


def prediction_lines(r: dict) -> list[str]:
    """One image's top-k: its path on a line of its own (never wrapped), then class and probability;
    an answer below the model's threshold is headed "unsure" so nobody reads the first row as one."""
    width = max(len(t["label"]) for t in r["top"])
    head = str(r["path"] or "<image>") + ("   -> unsure (below the model's threshold)" if r["status"] == "unsure"
                                          else "")
    return [head, *(f"  {t['label']:<{width}}  {t['score']:.3f}" for t in r["top"])]


def training_summary(run) -> list[str]:
    m = run.metrics
    va = m.get("val_accuracy")
    lines = [f"run: {run.path}  ({m['mode']}, {m['backbone']}, {len(run.classes)} classes, {m['seconds']:.1f} s)",
             f"train accuracy {m['train_accuracy']:.4f}" + (f"   val accuracy {va:.4f}" if va is not None else "")]
    if m.get("best_epoch") is not None and m.get("mode") == "finetune":
        lines.append(f"kept epoch {m['best_epoch']} of {len(m.get('history', [])) - 1}")
    return lines


def robustness_lines(r: dict) -> list[str]:
    lines = [f"{r['method']} ({r['steps']} steps) on {r['images']} images", f"{'ε':<10}accuracy"]
    return lines + [f"{lab:<10}{a:.1%}" for lab, a in zip(r["eps_labels"], r["accuracy"], strict=True)]


def dream_lines(r) -> list[str]:
    lines = [f"{r.method}, {r.steps} steps, {r.seconds:.1f} s: p({r.target}) = {r.prob:.3f} on "
             f"{r.model}  (top-3: {', '.join(f'{c} {p:.2f}' for c, p in r.top)})"]
    if r.check:
        c = r.check
        p = "n/a" if c["prob"] is None else f"{c['prob']:.3f}"
        lines.append(f"check with {c['backbone']}: p({r.target}) = {p}  (top-3: "
                     f"{', '.join(f'{n} {q:.2f}' for n, q in c['top'])})")
    return lines


def _db(v: float | None) -> str:
    return "∞ (unchanged)" if v is None else f"{v:.1f} dB"


def attack_lines(r: dict) -> list[str]:
    """Human-readable lines for the CLI and the demo."""
    o, a = r["original"], r["adversarial"]
    goal = f"target {r['target']}" if r["targeted"] else "untargeted"
    lines = [
        f"{r['method']} ({goal}, ε = {r['eps_label']}, {r['steps']} steps) on {r['model']}, "
        f"{r['input_size']}×{r['input_size']} input",
        f"original:    {o['class']} (p = {o['prob']:.3f})",
        f"adversarial: {a['class']} (p = {a['prob']:.3f})"
        + (f", target p = {a['target_prob']:.3f}" if r["targeted"] else ""),
        f"{'SUCCESS' if r['success'] else 'FAILED'} "
        + ("(scored on the saved 8-bit PNG)" if r["scored_from_saved_png"] else "(after 8-bit rounding)"),
        f"L∞ = {r['linf_255']:.2f}/255 ({r['linf']:.4f}), L2 = {r['l2']:.3f}, PSNR = {_db(r['psnr_db'])}, "
        f"{r['seconds']:.1f} s",
    ]
    if r.get("transfer"):
        t = r["transfer"]
        lines.append(f"transfer to {t['model']}: {t['original']['class']} → {t['adversarial']['class']} "
                     f"(p = {t['adversarial']['prob']:.3f}) — "
                     + ("transferred" if t["success"] else "not fooled"))
    for k in ("png", "figure"):
        if r.get(k):
            lines.append(f"{k}: {r[k]}")
    return lines


def engine_table_lines(r: dict) -> list[str]:
    """Every engine's forward-only img/s side by side, and the verdict train/evaluate use here."""
    table = r.get("engines")
    if not table:
        return []
    v = r.get("verdict") or {}
    width = max(len(k) for k in table)
    lines = ["", f"engines (forward-only on pre-decoded batches of {next(iter(table.values()))['batch_size']}, "
                 "best of alternating rounds):"]
    for label, t in table.items():
        mark = "   <- verdict" if label == v.get("winner") else ""
        lines.append(f"  {label:<{width}}  {t['img_s']:>8.1f} img/s   rounds {', '.join(map(str, t['rounds']))}{mark}")
    if v:
        lines.append(f"verdict: {v['engine']} (fastest of {', '.join(v['raced'])}; stored in {v['stored']})")
    return lines


def bench_report(r: dict) -> str:
    """Plain-text report with everything needed to compare runs across machines."""
    from ..runtime.device import compile_default

    s = r["settings"]
    lines = [
        f"transferlab bench  {r['backbone']}  {r['input']}",
        f"data: {r['data']} ({r['distinct_images']} distinct files, {r['images']} images for (b))",
        f"device: {s['device']}  torch {s['torch']}",
        f"settings: engine {s['engine']}, batch {s['batch_size']}, threads {s['torch_threads']}, decode threads "
        f"{s['decode_workers']} (nice {s['decode_nice']}), "
        + (f"fp32 ONNX (one-off export {s['compile_seconds'] or 0:.1f} s)" if s["engine"] == "onnxruntime" else
           f"bf16 {s['bf16']}, channels_last {s['channels_last']}, compile {s['compile']}"
           + (f" (one-off {s['compile_seconds']:.1f} s)" if s.get("compile") and s.get("compile_seconds") else "")),
        *engine_table_lines(r),
        "",
        f"{'':<12}{'images':>8}{'seconds':>10}{'img/s':>10}{'peak RSS MB':>13}",
    ]
    for key, label in (("naive", "(a) naive"), ("pipeline", "(b) pipeline"), ("limit", "(c) limit")):
        if key in r:
            m = r[key]
            lines.append(f"{label:<12}{m['images']:>8}{m['seconds']:>10.2f}{m['img_s']:>10.1f}"
                         f"{m['peak_rss_mb']:>13.0f}   {m['note']}")
    ratios = "  ".join(f"{k} = {v:.2f}" for k, v in r["ratios"].items())
    lines += ["", f"ratios: {ratios}   peak RSS {r['peak_rss_mb']:.0f} MB"]
    if r["pipeline"].get("failed"):
        lines.append(f"unreadable files skipped: {r['pipeline']['failed']}")
    if s["engine"] != s["engine_default"]:
        lines.append(f"note: train/evaluate/predict run the model with {s['engine_default']} here "
                     f"(measured verdict, or TRANSFERLAB_ENGINE); bench --engine {s['engine_default']} measures that")
    elif s["engine"] == "torch" and s["compile"] != compile_default():
        on = compile_default()
        flag = "--compile" if on else "--no-compile"
        lines.append(f"note: train/evaluate/predict extract {'with' if on else 'without'} torch.compile here "
                     f"(TRANSFERLAB_COMPILE={'1' if on else 'unset or 0'}); bench {flag} measures that")
    return "\n".join(lines)


def export_lines(r) -> list[str]:
    """What ``transferlab export`` says: where, and how closely onnxruntime reproduces PyTorch."""
    return [f"exported to {r.out_dir}  (ONNX opset {r.opset}, {r.export_seconds:.1f} s)",
            f"parity on {r.n_images} images ({r.verify_source}): max |Δp| {r.max_abs_dprob:.1e}, "
            f"top-1 agreement {r.top1_agreement:.0%}",
            f"speed, batch {r.batch_size}: PyTorch fp32 {r.torch_img_s:.0f} img/s, "
            f"onnxruntime {r.onnx_img_s:.0f} img/s",
            f"predict without PyTorch: transferlab predict {r.out_dir} PHOTOS..."]


def leaderboard_lines(rows: list[dict], top: int = 20) -> list[str]:
    """The auto search's leaderboard (best first) as an aligned table; skipped rows summed up."""
    scored = [r for r in rows if r.get("rank") not in ("", None)][:top]
    skipped = [r for r in rows if r.get("rank") in ("", None)]
    head = ("#", "candidate", "C", "CV accuracy", "fit s", "img/s")
    body = [(str(r["rank"]), r["candidate"], "" if r["C"] in ("", None) else f"{float(r['C']):g}",
             f"{r['cv_accuracy']:.2%} ± {r['cv_sd']:.2%}", f"{r['fit_s']:.2f}", f"{r['predict_img_s']:.0f}")
            for r in scored]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (head, *body)]
    if skipped:
        lines.append(f"skipped for the budget: {', '.join(r['candidate'] for r in skipped)}")
    return lines


def calibration_line(cal: dict | None) -> str | None:
    """ECE before/after temperature scaling, or None for a run without held-out data."""
    if not cal:
        return None
    head = f"calibration ({cal['source']}, {cal['n']} images): ECE {cal['ece_before']:.2%}"
    if not cal.get("fitted", True):
        return f"{head}; {cal.get('note', 'temperature not fitted')}"
    return f"{head} -> {cal['ece_after']:.2%} with temperature {cal['temperature']:.2f}"


def review_lines(r: dict, top: int = 24) -> list[str]:
    """Suspected label errors, most suspect first."""
    lines = [f"{r['suspects_found']} suspected label errors among {r['images']} images, "
             f"{r.get('issues_found', 0)} of them confident-learning issues (cross-validated accuracy "
             f"{r['cv_accuracy']:.2%})"]
    for s in r["suspects"][:top]:
        lines.append(f"{s['rank']:>3}  {s['path']}  given {s['given']} -> suggested {s['suggested']} "
                     f"(p {s['p_given']:.2f} vs {s['p_suggested']:.2f}){'  confident' if s.get('confident') else ''}")
    return lines
