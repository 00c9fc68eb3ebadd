#!/usr/bin/env python3
"""Print every coxswain_* metric family name that alert rules and Grafana dashboards use.

    python3 tests/tools/metric_names.py deploy/prometheus/coxswain-alerts.yml \\
        deploy/grafana/coxswain-dashboard.json

One name a line, sorted and unique. Histogram sample names (_bucket, _sum, _count) are
mapped back to their family; counters keep their _total name, as /metrics in the
Prometheus text format 0.0.4 shows them. Files ending in .json are read as Grafana
dashboards (targets[].expr of every panel, nested rows and panels included, and the
templating queries); anything else as Prometheus rule files (every `expr:`).
Standard library only.
"""

import json
import re
import sys

USAGE = "usage: metric_names.py RULES.yml [DASHBOARD.json ...]"

# A metric name in PromQL, not the tail of a longer name.
NAME = re.compile(r"(?<![A-Za-z0-9_:])coxswain_[A-Za-z0-9_:]*")
# Histogram sample names, mapped back to the family. (No coxswain gauge or counter ends
# in these today; a future one would need an exception here.)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def strip_strings_and_comments(expr):
    """Blank out quoted strings (a label value such as job="coxswain_x" is not a name)
    and PromQL/YAML comments (# to the end of the line)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    return re.sub(r"#[^\n]*", "", expr)


def names_in(expr):
    return NAME.findall(strip_strings_and_comments(expr))


def rule_exprs(text):
    """The `expr:` values of a Prometheus rule file, without a YAML parser.

    Handles `expr: <plain or quoted scalar>` and block scalars (`expr: |` / `expr: >-`),
    whose body is every following line indented deeper than the `expr:` key.
    """
    lines = text.splitlines()
    exprs = []
    i = 0
    key = re.compile(r"^(\s*)(?:-\s+)?expr:\s*(.*)$")
    while i < len(lines):
        m = key.match(lines[i])
        if not m:
            i += 1
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        i += 1
        if rest[:1] in ("|", ">"):
            body = []
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            exprs.append("\n".join(body))
        else:
            # A plain scalar may continue on deeper-indented lines.
            body = [rest]
            while i < len(lines) and lines[i].strip() and \
                    len(lines[i]) - len(lines[i].lstrip()) > indent and \
                    not key.match(lines[i]):
                body.append(lines[i].strip())
                i += 1
            value = " ".join(body)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            exprs.append(value)
    return exprs


def dashboard_exprs(doc):
    """targets[].expr of every panel (rows' and library panels' nested panels too) and
    the query of every templating variable (a string, or an object with `query`)."""
    exprs = []

    def panels(node):
        for p in node.get("panels") or []:
            if not isinstance(p, dict):
                continue
            for t in p.get("targets") or []:
                if isinstance(t, dict) and isinstance(t.get("expr"), str):
                    exprs.append(t["expr"])
            panels(p)

    panels(doc)
    # Old-style dashboards keep panels under rows[].panels.
    for r in doc.get("rows") or []:
        if isinstance(r, dict):
            panels(r)
    for v in (doc.get("templating") or {}).get("list") or []:
        if not isinstance(v, dict):
            continue
        for q in (v.get("query"), v.get("definition")):
            if isinstance(q, dict):
                q = q.get("query")
            if isinstance(q, str):
                exprs.append(q)
    return exprs


def family_names(exprs):
    out = set()
    for n in (n for e in exprs for n in names_in(e)):
        for suffix in HISTOGRAM_SUFFIXES:
            if n.endswith(suffix):
                n = n[: -len(suffix)]
                break
        out.add(n)
    return out


def main(paths):
    if not paths:
        print(USAGE, file=sys.stderr)
        return 2
    exprs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".json"):
                exprs += dashboard_exprs(json.load(f))
            else:
                exprs += rule_exprs(f.read())
    for name in sorted(family_names(exprs)):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
