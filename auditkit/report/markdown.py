"""The reviewer's report as Markdown (GitHub tables), from `build_report`'s data; figures are
left out (they are inline only in the HTML page) and listed by path."""

from __future__ import annotations

from tabulate import tabulate

from auditkit.text import md_code as c_, md_text as t_


def _f(x, spec: str = ".6f") -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[list], headers: list[str]) -> str:
    """A GitHub table; every cell is Markdown already (package text through `t_`/`c_`)."""
    return tabulate([[str(c) for c in r] for r in rows], headers=[t_(h) for h in headers], tablefmt="github",
                    disable_numparse=True)


def _support_md(d: dict) -> list[str]:
    """What the page leads with: the claims' and checks' calls beside the rules' outcomes."""
    sup = d.get("support")
    if not sup:
        return []
    out = [f"## What the data support (at {sup['level']:g})", "",
           "Rules replayed exactly on point estimates; beside each, the call: held/pass/fail only where the data "
           "support it at this level (docs/STATISTICS.md), else undetermined. Holm p: across every claim and check.", ""]
    if d["claims"]:
        out += [_table([[f"**{t_(c['id'])}**", c["outcome"].replace("_", " "),
                         "-" if c["outcome"] == "not_checkable" else c["call"].replace("_", " "),
                         "-" if c.get("low") is None else f"[{c['low']:.6g}, {c['high']:.6g}]",
                         _f(c.get("p"), ".4f"), _f(c.get("p_holm"), ".4f"), t_(c.get("basis", ""))] for c in d["claims"]],
                       ["claim", "rule outcome", "data support", "interval", "p", "Holm p", "how"]), ""]
    if sup["checks"]:
        rows = []
        for c in sup["checks"]:
            ref = f" vs {c['reference']}" if c.get("reference") else ""
            iv = "-" if c.get("low") is None else f"[{c['low']:.6f}, {c['high']:.6f}]"
            rows.append([t_(c["gate"]), t_(f"{c['kind']} {c['candidate']}{ref}"), "PASS" if c["passed"] else "FAIL",
                         _f(c.get("estimate"), ".6f"), iv, c.get("threshold") if c.get("threshold") is not None else "-",
                         c["call"], _f(c.get("p"), ".4f"), _f(c.get("p_holm"), ".4f")])
        out += [_table(rows, ["gate", "check", "rule", "estimate", "interval", "threshold", "call", "p", "Holm p"]), ""]
    return out


def render_markdown(data: dict) -> str:
    d = data
    # every value from the package (names, paths, cells, messages) goes through t_ (text) or c_ (code)
    out = [f"# auditkit report: {t_(d['name'])}", "",
           f"Package {c_(d['package'])}" + (f", generated {t_(d['generated_at'])}" if d.get("generated_at") else "")
           + f", auditkit {t_(d['environment']['auditkit'])}.", "",
           f"**Overall: {'OK' if d['ok'] else 'FAILED'}**", "",
           f"- root (recorded): {c_(d['root']['recorded'])}", f"- root (of the files): {c_(d['root']['computed'])}", "",
           *_support_md(d),
           "## Verdicts", "",
           _table([[t_(v["check"]), t_(v["status"]), t_(v["summary"]), c_(v["command"])] for v in d["verdicts"]],
                  ["check", "verdict", "summary", "command"]), ""]
    for v in d["verdicts"]:
        if v["findings"]:
            out += [f"### {t_(v['check'])}: findings", ""]
            out += [f"- {c_(f['path'])} {t_(f['location'])}: **{t_(f['code'])}** ("
                    + (f"recorded {t_(f['recorded'] or '-')}; replayed {t_(f['replayed'] or '-')})" if "replayed" in f else
                       f"expected {t_(f['expected'] or '-')}; found {t_(f['found'] or '-')})") for f in v["findings"][:200]]
            out.append("")
    out += ["## Claims", ""]
    if d["claims"]:
        out.append(_table([[f"**{t_(c['id'])}**: {t_(c['statement'])}",
                            t_(c["why"]) if c["outcome"] == "not_checkable" else f"{t_(c['found'])} ({t_(c['evidence'])})",
                            c_(c["command"]), t_(str(c["outcome"]).replace("_", " "))] for c in d["claims"]],
                          ["claim", "evidence", "command", "result"]))
    else:
        out.append(t_(d["claims_note"]))
    out += ["", "## Gates", ""]
    for g in d["gates"]:
        out += [f"### gate {t_(g['gate'])} — {'replays identically' if g['identical'] else str(len(g['differences'])) + ' difference(s)'}",
                "", f"rules {c_(g['rules_path'])}, top_k {t_(g['top_k'])}"
                + (f", always_keep {t_(', '.join(map(str, g['always_keep'])))}" if g["always_keep"] else "")
                + f"; frozen_at {c_(g['frozen_at'])}, first input row started {c_(g['first_input_started_at'])}.", ""]
        ev = g.get("freeze_evidence")
        out += [("Freeze evidence: **" + t_(ev.get("level")) + "**: " + t_(g.get("freeze_evidence_text", ""))) if ev else
                "Freeze evidence: none recorded beyond `frozen_at` (asserted by the package's author).", ""]
        if g["candidates"]:
            rows = []
            for c in g["candidates"]:
                cells = [("-" if x["value"] is None else f"{x['value']:.6f} ({t_(x['rank'] or x['status'])})")
                         if x["value"] is not None else t_(x["status"]) for x in c["cells"]]
                r = c["robustness"]
                rows.append([t_(c["config_id"]), t_(c["rank"] or "-"), *cells, _f(c["mean"]),
                             _f(r["p_promoted"], ".3f") if r else "-",
                             f"{t_(r['rank_lo'])}–{t_(r['rank_hi'])}" if r else "-", f"{t_(c['state'])}: {t_(c['reason'])}"])
            out += [_table(rows, ["candidate", "rank", *g["cells"], "mean", "P(promoted)", "rank 95%", "outcome"]), ""]
        if g["checks"]:
            rows = []
            for ch in g["checks"]:
                rb = ch.get("robustness")
                rows.append([t_(ch["kind"]), t_(ch["candidate"]), t_(ch.get("reference") or "-"), _f(ch.get("value"), ".9f"),
                             t_(ch.get("threshold")) if ch.get("threshold") is not None else "-",
                             "PASS" if ch["passed"] else "FAIL", _f(rb["p_flip"], ".3f") if rb else "-"])
            out += [_table(rows, ["check", "candidate", "reference", "value", "threshold", "outcome", "P(flip)"]), ""]
        rg = g.get("robustness")
        if rg:
            line = f"Robustness: {t_(rg['method'])}"
            if rg.get("last_promoted"):
                line += (f"; margin between {t_(rg['last_promoted'])} (last promoted on rank) and "
                         f"{t_(rg['first_eliminated'])} (first eliminated): {_f(rg['margin'])}")
                if rg.get("margin_in_noise") is not None:
                    line += (f" = {rg['margin_in_noise']:.2f} x noise ({t_(rg['noise_source'])}), "
                             f"p = {rg['p_one_sided']:.4f}")
            out += [line + ".", ""]
    out += ["## Host sensitivity", ""]
    if d["host_correlation"]:
        out.append(_table([[t_(h["stage"]), f"{t_(h['host_a'])} / {t_(h['host_b'])}", t_(h["n"]), _f(h["spearman"], ".3f"),
                            "-" if h["ci_low"] is None else f"[{h['ci_low']:.3f}, {h['ci_high']:.3f}]",
                            _f(h["p_permutation"], ".4f"), t_(h["ci_method"])] for h in d["host_correlation"]],
                          ["stage", "hosts", "n", "Spearman", "95% interval", "permutation p", "how"]))
    out += ["", "## Figures", ""]
    out += [f"- {c_(f['path'])} ({t_(f['kind'])})" for f in d["figures"]] or ["The package lists no figures."]
    out += ["", "## Environment", "", _table([[t_(k), t_(v)] for k, v in d["environment"].items()], ["", "version"]), ""]
    return "\n".join(out)
