"""The reviewer's report as Markdown (GitHub tables), from `build_report`'s data; figures are
left out (they are inline only in the HTML page) and listed by path."""

from __future__ import annotations

from tabulate import tabulate


def _f(x, spec: str = ".6f") -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[list], headers: list[str]) -> str:
    clean = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
    return tabulate(clean, headers=headers, tablefmt="github", disable_numparse=True)


def _support_md(d: dict) -> list[str]:
    """What the page leads with: the claims' and checks' calls beside the rules' outcomes."""
    sup = d.get("support")
    if not sup:
        return []
    out = [f"## What the data support (at {sup['level']:g})", "",
           "Rules replayed exactly on point estimates; beside each, the call: held/pass/fail only where the data "
           "support it at this level (docs/STATISTICS.md), else undetermined. Holm p: across every claim and check.", ""]
    if d["claims"]:
        out += [_table([[f"**{c['id']}**", c["outcome"].replace("_", " "),
                         "-" if c["outcome"] == "not_checkable" else c["call"].replace("_", " "),
                         "-" if c.get("low") is None else f"[{c['low']:.6g}, {c['high']:.6g}]",
                         _f(c.get("p"), ".4f"), _f(c.get("p_holm"), ".4f"), c.get("basis", "")] for c in d["claims"]],
                       ["claim", "rule outcome", "data support", "interval", "p", "Holm p", "how"]), ""]
    if sup["checks"]:
        rows = []
        for c in sup["checks"]:
            ref = f" vs {c['reference']}" if c.get("reference") else ""
            iv = "-" if c.get("low") is None else f"[{c['low']:.6f}, {c['high']:.6f}]"
            rows.append([c["gate"], f"{c['kind']} {c['candidate']}{ref}", "PASS" if c["passed"] else "FAIL",
                         _f(c.get("estimate"), ".6f"), iv, c.get("threshold") if c.get("threshold") is not None else "-",
                         c["call"], _f(c.get("p"), ".4f"), _f(c.get("p_holm"), ".4f")])
        out += [_table(rows, ["gate", "check", "rule", "estimate", "interval", "threshold", "call", "p", "Holm p"]), ""]
    return out


def render_markdown(data: dict) -> str:
    d = data
    out = [f"# auditkit report: {d['name']}", "",
           f"Package `{d['package']}`" + (f", generated {d['generated_at']}" if d.get("generated_at") else "")
           + f", auditkit {d['environment']['auditkit']}.", "",
           f"**Overall: {'OK' if d['ok'] else 'FAILED'}**", "",
           f"- root (recorded): `{d['root']['recorded']}`", f"- root (of the files): `{d['root']['computed']}`", "",
           *_support_md(d),
           "## Verdicts", "",
           _table([[v["check"], v["status"], v["summary"], f"`{v['command']}`"] for v in d["verdicts"]],
                  ["check", "verdict", "summary", "command"]), ""]
    for v in d["verdicts"]:
        if v["findings"]:
            out += [f"### {v['check']}: findings", ""]
            out += [f"- `{f['path']}` {f['location']}: **{f['code']}** (expected {f['expected'] or '-'}; found "
                    f"{f['found'] or '-'})" for f in v["findings"][:200]]
            out.append("")
    out += ["## Claims", ""]
    if d["claims"]:
        out.append(_table([[f"**{c['id']}**: {c['statement']}",
                            c["why"] if c["outcome"] == "not_checkable" else f"{c['found']} ({c['evidence']})",
                            f"`{c['command']}`", c["outcome"].replace("_", " ")] for c in d["claims"]],
                          ["claim", "evidence", "command", "result"]))
    else:
        out.append(d["claims_note"])
    out += ["", "## Gates", ""]
    for g in d["gates"]:
        out += [f"### gate {g['gate']} — {'replays identically' if g['identical'] else str(len(g['differences'])) + ' difference(s)'}",
                "", f"rules `{g['rules_path']}`, top_k {g['top_k']}"
                + (f", always_keep {', '.join(g['always_keep'])}" if g["always_keep"] else "")
                + f"; frozen_at `{g['frozen_at']}`, first input row started `{g['first_input_started_at']}`.", ""]
        ev = g.get("freeze_evidence")
        out += [("Freeze evidence: **" + str(ev.get("level")) + "**: " + g.get("freeze_evidence_text", "")) if ev else
                "Freeze evidence: none recorded beyond `frozen_at` (asserted by the package's author).", ""]
        if g["candidates"]:
            rows = []
            for c in g["candidates"]:
                cells = [("-" if x["value"] is None else f"{x['value']:.6f} ({x['rank'] or x['status']})")
                         if x["value"] is not None else x["status"] for x in c["cells"]]
                r = c["robustness"]
                rows.append([c["config_id"], c["rank"] or "-", *cells, _f(c["mean"]),
                             _f(r["p_promoted"], ".3f") if r else "-",
                             f"{r['rank_lo']}–{r['rank_hi']}" if r else "-", f"{c['state']}: {c['reason']}"])
            out += [_table(rows, ["candidate", "rank", *g["cells"], "mean", "P(promoted)", "rank 95%", "outcome"]), ""]
        if g["checks"]:
            rows = []
            for ch in g["checks"]:
                rb = ch.get("robustness")
                rows.append([ch["kind"], ch["candidate"], ch.get("reference") or "-", _f(ch.get("value"), ".9f"),
                             ch.get("threshold") if ch.get("threshold") is not None else "-",
                             "PASS" if ch["passed"] else "FAIL", _f(rb["p_flip"], ".3f") if rb else "-"])
            out += [_table(rows, ["check", "candidate", "reference", "value", "threshold", "outcome", "P(flip)"]), ""]
        rg = g.get("robustness")
        if rg:
            line = f"Robustness: {rg['method']}"
            if rg.get("last_promoted"):
                line += (f"; margin between {rg['last_promoted']} (last promoted on rank) and {rg['first_eliminated']}"
                         f" (first eliminated): {_f(rg['margin'])}")
                if rg.get("margin_in_noise") is not None:
                    line += f" = {rg['margin_in_noise']:.2f} x noise ({rg['noise_source']}), p = {rg['p_one_sided']:.4f}"
            out += [line + ".", ""]
    out += ["## Host sensitivity", ""]
    if d["host_correlation"]:
        out.append(_table([[h["stage"], f"{h['host_a']} / {h['host_b']}", h["n"], _f(h["spearman"], ".3f"),
                            "-" if h["ci_low"] is None else f"[{h['ci_low']:.3f}, {h['ci_high']:.3f}]",
                            _f(h["p_permutation"], ".4f"), h["ci_method"]] for h in d["host_correlation"]],
                          ["stage", "hosts", "n", "Spearman", "95% interval", "permutation p", "how"]))
    out += ["", "## Figures", ""]
    out += [f"- `{f['path']}` ({f['kind']})" for f in d["figures"]] or ["The package lists no figures."]
    out += ["", "## Environment", "", _table([[k, v] for k, v in d["environment"].items()], ["", "version"]), ""]
    return "\n".join(out)
