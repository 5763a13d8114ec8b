"""One self-contained HTML page from `build_report`'s data: inline CSS, figures as data: URIs,
no script, no external request (Jinja2, autoescaped)."""

from __future__ import annotations

from jinja2 import Environment, StrictUndefined

CSS = """
:root { --ok: #1a7f37; --bad: #b42318; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1180px; padding: 24px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 34px 0 10px; border-bottom: 1px solid var(--line);
padding-bottom: 4px; } h3 { font-size: 16px; margin: 24px 0 8px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.muted { color: var(--muted); } .small { font-size: 12.5px; }
table { border-collapse: collapse; margin: 6px 0 12px; width: 100%; }
th, td { border: 1px solid var(--line); padding: 4px 7px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; }
.b-ok, .b-held, .b-pass, .b-promoted { background: var(--ok); } .b-failed, .b-not_held, .b-fail { background: var(--bad); }
.b-not-run, .b-not_checkable, .b-ineligible, .b-undetermined { background: var(--warn); } .b-eliminated { background: var(--muted); }
tr.promoted td { background: #dafbe1; } tr.eliminated td { background: #fff; } tr.ineligible td { background: #fff8c5; }
tr.promoted td:first-child { border-left: 4px solid var(--ok); } tr.eliminated td:first-child { border-left: 4px solid var(--muted); }
tr.ineligible td:first-child { border-left: 4px solid var(--warn); }
.root { background: var(--bg); border: 1px solid var(--line); padding: 8px 12px; border-radius: 6px; margin: 10px 0; }
.verdict-line { font-size: 16px; margin: 10px 0; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12.5px; }
details { margin: 4px 0 10px; } summary { cursor: pointer; color: var(--muted); }
.evidence { border-left: 3px solid var(--line); padding-left: 10px; margin: 6px 0; }
nav a { margin-right: 12px; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>auditkit report: {{ d.name }}</title>
<style>{{ css }}</style>
</head>
<body>
<header id="summary">
<h1>auditkit report: {{ d.name }}</h1>
<div class="muted">package <code>{{ d.package }}</code>{% if d.generated_at %} · generated {{ d.generated_at }}{% endif %}
 · auditkit {{ d.environment.auditkit }}</div>
<div class="verdict-line" id="overall">Overall:
 <span class="badge {{ 'b-ok' if d.ok else 'b-failed' }}">{{ 'OK' if d.ok else 'FAILED' }}</span>
 {% if d.ok %}every check that ran passed{% else %}see the findings below{% endif %}</div>
<div class="root" id="root-hash">root (recorded): <code>{{ d.root.recorded or '-' }}</code><br>
root (of the files): <code>{{ d.root.computed or '-' }}</code>
{% if d.root.recorded and d.root.recorded == d.root.computed %}<span class="badge b-ok">match</span>
{% else %}<span class="badge b-failed">differ</span>{% endif %}
<div class="small muted">Compare this root with the one the paper states: one hash names every file of the package.</div></div>
<nav class="small"><a href="#support">what the data support</a><a href="#verdicts">verdicts</a><a href="#claims">claims</a><a href="#gates">gates</a>
<a href="#hosts">hosts</a><a href="#figures">figures</a><a href="#environment">environment</a></nav>
</header>

<section id="support"><h2>What the data support (at {{ d.support.level }})</h2>
<p class="small muted">The frozen rules are replayed exactly on point estimates (the outcomes below and in
"Claims" and "Gates"). Beside each, the call: <b>held</b>/<b>pass</b>/<b>fail</b> only where the data support it
at this level (paired intervals within cells, hosts as strata; docs/STATISTICS.md), otherwise <b>undetermined</b>.
p: one-sided; Holm p: adjusted across every claim and check of the package.</p>
{% if d.claims %}<p>Claims: {% for k, n in d.support.claims.items() %}<span class="badge b-{{ k }}">{{ n }} {{ k|replace('_', ' ') }}</span> {% endfor %}
<span class="small muted">(on point estimates: {% for k, n in d.support.claims_outcome.items() %}{{ n }} {{ k|replace('_', ' ') }}{% if not loop.last %}, {% endif %}{% endfor %})</span></p>
<table class="support-claims"><tr><th>claim</th><th>rule outcome</th><th>data support</th><th>interval</th><th>p</th><th>Holm p</th><th>how</th></tr>
{% for c in d.claims %}<tr data-call="{{ c.call }}"><td><b>{{ c.id }}</b><br><span class="small">{{ c.statement }}</span></td>
<td><span class="badge b-{{ c.outcome }}">{{ c.outcome|replace('_', ' ') }}</span></td>
<td>{% if c.outcome != 'not_checkable' %}<span class="badge b-{{ c.call }}">{{ c.call|replace('_', ' ') }}</span>{% else %}-{% endif %}</td>
<td class="num">{% if c.low is not none %}[{{ '%.6g'|format(c.low) }}, {{ '%.6g'|format(c.high) }}]{% else %}-{% endif %}</td>
<td class="num">{{ c.p|pvalue }}</td><td class="num">{{ c.p_holm|pvalue }}</td><td class="small">{{ c.basis }}</td></tr>
{% endfor %}</table>{% endif %}
{% if d.support.checks %}<p>Checks: {% for k, n in d.support.check_calls.items() %}<span class="badge b-{{ k }}">{{ n }} {{ k }}</span> {% endfor %}</p>
<table class="support-checks"><tr><th>gate</th><th>check</th><th>rule</th><th>estimate</th><th>interval</th><th>threshold</th><th>call</th><th>p</th><th>Holm p</th><th>method</th></tr>
{% for c in d.support.checks %}<tr data-call="{{ c.call }}"><td>{{ c.gate }}</td><td>{{ c.kind }} {{ c.candidate }}{% if c.reference %} vs {{ c.reference }}{% endif %}</td>
<td><span class="badge {{ 'b-pass' if c.passed else 'b-fail' }}">{{ 'PASS' if c.passed else 'FAIL' }}</span></td>
<td class="num">{% if c.estimate is none %}-{% elif c.kind == 'ranks_first_in_all_cells' %}{{ c.estimate|int }} cells{% else %}{{ '%.6f'|format(c.estimate) }}{% endif %}</td>
<td class="num">{% if c.low is not none %}[{{ '%.6f'|format(c.low) }}, {{ '%.6f'|format(c.high) }}]{% elif c.get('margin') %}gap to {{ c.margin.versus }} [{{ '%.6f'|format(c.margin.low) if c.margin.low is not none else '-' }}, {{ '%.6f'|format(c.margin.high) if c.margin.high is not none else '-' }}]{% else %}-{% endif %}</td>
<td class="num">{{ c.threshold if c.threshold is not none else '-' }}</td>
<td><span class="badge b-{{ c.call }}">{{ c.call }}</span></td><td class="num">{{ c.p|pvalue }}</td><td class="num">{{ c.p_holm|pvalue }}</td>
<td class="small">{{ (c.margin.method if c.get('margin') else c.method) }}</td></tr>
{% endfor %}</table>{% endif %}
{% for f in d.support.forests %}<figure class="forest" id="forest-{{ f.gate }}"><img src="{{ f.uri }}" alt="forest plot of gate {{ f.gate }}">
<figcaption>gate {{ f.gate }}: each gap with its interval against the threshold (dashed)</figcaption></figure>{% endfor %}
</section>

<section id="verdicts"><h2>Verdicts</h2>
<table><tr><th>check</th><th>verdict</th><th>summary</th><th>command to reproduce</th></tr>
{% for v in d.verdicts %}<tr class="verdict" data-check="{{ v.check }}"><td>{{ v.check }}</td>
<td><span class="badge b-{{ v.status|lower|replace(' ', '-') }}">{{ v.status }}</span></td>
<td>{{ v.summary }}</td><td><code>{{ v.command }}</code></td></tr>
{% endfor %}</table>
{% for v in d.verdicts if v.findings %}<details><summary>{{ v.check }}: {{ v.findings|length }} finding(s)
({% for c, n in v.counts.items() %}{{ c }} ×{{ n }}{% if not loop.last %}, {% endif %}{% endfor %})</summary>
<table class="small"><tr><th>file</th><th>where</th><th>code</th><th>expected</th><th>found</th><th>what it means</th></tr>
{% for f in v.findings[:200] %}<tr><td><code>{{ f.path }}</code></td><td><code>{{ f.location }}</code></td>
<td><code>{{ f.code }}</code></td><td>{% if f.replayed is defined %}replayed {% endif %}{{ f.expected }}</td><td>{% if f.replayed is defined %}recorded {% endif %}{{ f.found }}</td><td>{{ f.message }}</td></tr>
{% endfor %}</table>{% if v.findings|length > 200 %}<p class="muted">… and {{ v.findings|length - 200 }} more</p>{% endif %}
</details>{% endfor %}
</section>

<section id="claims"><h2>Claims</h2>
{% if d.claims %}
<table><tr><th>claim</th><th>evidence</th><th>command</th><th>result</th></tr>
{% for c in d.claims %}<tr class="claim" data-outcome="{{ c.outcome }}" id="claim-{{ c.id }}">
<td><b>{{ c.id }}</b><br>{{ c.statement }}<div class="small muted">checks: {{ c.expected }}</div></td>
<td>{% if c.outcome == 'not_checkable' %}<span class="muted">{{ c.why }}</span>{% else %}{{ c.found }}
<div class="small muted">{{ c.evidence }}</div>{% endif %}</td>
<td><code>{{ c.command }}</code></td>
<td><span class="badge b-{{ c.outcome }}">{{ c.outcome|replace('_', ' ') }}</span></td></tr>
{% endfor %}</table>
{% else %}<p class="muted">{{ d.claims_note }}</p>{% endif %}
</section>

<section id="gates"><h2>Gates</h2>
<p class="small muted">Each gate re-decided from the raw rows with its frozen rules. Rows: candidates;
cells: val_bpb (per-cell rank). <span class="badge b-promoted">promoted</span>
<span class="badge b-eliminated">eliminated</span> <span class="badge b-ineligible">ineligible</span>.
P(promoted) and the rank interval come from resampling the host-seed cells through the same engine.</p>
{% for g in d.gates %}
<article class="gate" id="gate-{{ g.gate }}"><h3>gate {{ g.gate }}
<span class="badge {{ 'b-ok' if g.identical else 'b-failed' }}">{{ 'replays identically' if g.identical else g.differences|length ~ ' difference(s)' }}</span></h3>
<div class="small">rules <code>{{ g.rules_path }}</code> · top_k {{ g.top_k }}{% if g.always_keep %} · always_keep {{ g.always_keep|join(', ') }}{% endif %}
· frozen_at <code>{{ g.frozen_at or '-' }}</code> · first input row started <code>{{ g.first_input_started_at or '-' }}</code></div>
<div class="evidence small freeze-evidence">{% if g.freeze_evidence %}freeze evidence:
<b class="freeze-level">{{ g.freeze_evidence.level }}</b> — {{ g.freeze_evidence_text }}
{% else %}freeze evidence: none recorded beyond <code>frozen_at</code> (asserted by the package's author){% endif %}</div>
{% if g.candidates %}
<table class="cells"><tr><th>candidate</th><th>rank</th>{% for k in g.cells %}<th>{{ k }}</th>{% endfor %}<th>mean</th><th>std</th>
<th>P(promoted)</th><th>rank 95%</th><th>outcome and reason</th></tr>
{% for c in g.candidates %}<tr class="{{ c.state }}" data-candidate="{{ c.config_id }}"><td><b>{{ c.config_id }}</b></td>
<td class="num">{{ c.rank if c.rank is not none else '-' }}</td>
{% for x in c.cells %}<td class="num">{% if x.value is not none %}{{ '%.6f'|format(x.value) }} ({{ x.rank if x.rank is not none else x.status }}){% else %}{{ x.status }}{% endif %}</td>{% endfor %}
<td class="num">{{ '%.6f'|format(c.mean) if c.mean is not none else '-' }}</td>
<td class="num">{{ '%.6f'|format(c.std) if c.std is not none else '-' }}</td>
<td class="num">{{ '%.3f'|format(c.robustness.p_promoted) if c.robustness else '-' }}</td>
<td class="num">{{ (c.robustness.rank_lo ~ '–' ~ c.robustness.rank_hi) if c.robustness else '-' }}</td>
<td><span class="badge b-{{ c.state }}">{{ c.state }}</span> <span class="reason small">{{ c.reason }}</span></td></tr>
{% endfor %}</table>
{% endif %}
{% if g.checks %}<table class="checks"><tr><th>check</th><th>candidate</th><th>reference</th><th>value</th><th>threshold</th>
<th>outcome</th><th>value 95%</th><th>P(flip)</th></tr>
{% for ch in g.checks %}<tr><td>{{ ch.kind }}</td><td>{{ ch.candidate }}</td><td>{{ ch.get('reference') or '-' }}</td>
<td class="num">{% if ch.value is none %}-{% elif ch.kind == 'ranks_first_in_all_cells' %}{{ ch.value|int }}/{{ g.cells|length }} cells{% else %}{{ '%.9f'|format(ch.value) }}{% endif %}</td>
<td class="num">{{ ch.threshold if ch.threshold is not none else '-' }}</td>
<td><span class="badge {{ 'b-pass' if ch.passed else 'b-fail' }}">{{ 'PASS' if ch.passed else 'FAIL' }}</span></td>
<td class="num">{% if ch.robustness and ch.robustness.value_lo is not none and ch.kind != 'ranks_first_in_all_cells' %}{{ '%.6f'|format(ch.robustness.value_lo) }} … {{ '%.6f'|format(ch.robustness.value_hi) }}{% else %}-{% endif %}</td>
<td class="num">{{ '%.3f'|format(ch.robustness.p_flip) if ch.robustness and ch.robustness.p_flip is not none else '-' }}</td></tr>
{% endfor %}</table>{% endif %}
{% if g.robustness %}<div class="small robustness">robustness: {{ g.robustness.method }}
{% if g.robustness.last_promoted %} · margin between the last promoted on rank (<b>{{ g.robustness.last_promoted }}</b>) and the first eliminated
(<b>{{ g.robustness.first_eliminated }}</b>): {{ '%.6f'|format(g.robustness.margin) }} {{ g.metric.column if g.metric else '' }}{% if g.robustness.margin_in_noise is not none %},
that is {{ '%.2f'|format(g.robustness.margin_in_noise) }} × the noise ({{ g.robustness.noise_source }}), one-sided {{ g.robustness.p_one_sided|pclause }}{% endif %}{% endif %}
{% if g.robustness.note %} · {{ g.robustness.note }}{% endif %}</div>{% endif %}
{% if g.sensitivity %}<details><summary>promoted list under other top_k and without always_keep</summary>
<table class="small"><tr><th>variant</th><th>top_k</th><th>promoted</th><th>same as frozen</th></tr>
{% for s in g.sensitivity %}<tr><td>{{ s.variant }}</td><td class="num">{{ s.top_k }}</td><td>{{ s.promoted }}</td><td>{{ 'yes' if s.same_as_frozen else 'no' }}</td></tr>{% endfor %}
</table></details>{% endif %}
{% if g.differences %}<details open><summary>replay differences</summary><ul class="small">
{% for f in g.differences[:50] %}<li><code>{{ f.path }} {{ f.location }}</code> {{ f.code }}: {% if f.replayed is defined %}recorded {{ f.recorded }}; replayed {{ f.replayed }}{% else %}expected {{ f.expected }}; found {{ f.found }}{% endif %}</li>{% endfor %}
</ul></details>{% endif %}
</article>
{% endfor %}
</section>

<section id="hosts"><h2>Host sensitivity</h2>
{% if d.host_correlation %}<table><tr><th>stage</th><th>hosts</th><th>n</th><th>Spearman</th><th>95% interval</th><th>how</th><th>permutation p</th></tr>
{% for h in d.host_correlation %}<tr><td>{{ h.stage }}</td><td>{{ h.host_a }} / {{ h.host_b }}</td><td class="num">{{ h.n }}</td>
<td class="num">{{ '%.3f'|format(h.spearman) if h.spearman is not none else '-' }}</td>
<td class="num">{% if h.ci_low is not none %}[{{ '%.3f'|format(h.ci_low) }}, {{ '%.3f'|format(h.ci_high) }}]{% else %}-{% endif %}</td>
<td class="small">{{ h.ci_method }}</td><td class="num">{{ h.p_permutation|pvalue }}</td></tr>
{% endfor %}</table>
<p class="small muted">With three or four candidates a point Spearman says little: a perfect agreement of three happens by chance one time in six.</p>
{% else %}<p class="muted">No stage ran on two or more hosts.</p>{% endif %}
</section>

<section id="figures"><h2>Figures</h2>
{% for f in d.figures %}<figure id="figure-{{ f.id }}"><img src="{{ f.data_uri }}" alt="{{ f.id }}"><figcaption>{{ f.path }} ({{ f.kind }})</figcaption></figure>
{% else %}<p class="muted">The package lists no figures.</p>{% endfor %}
</section>

<section id="environment"><h2>Environment</h2>
<table class="small">{% for k, v in d.environment.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
</section>
</body>
</html>
"""

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _pvalue(p) -> str:
    if p is None:
        return "-"
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def _pclause(p) -> str:
    text = _pvalue(p)
    return "p " + text if text.startswith("<") else "p = " + text


_ENV.filters["pvalue"] = _pvalue
_ENV.filters["pclause"] = _pclause


def render_html(data: dict) -> str:
    """The page (a complete HTML document) for `build_report`'s data."""
    return _ENV.from_string(TEMPLATE).render(d=data, css=CSS)
