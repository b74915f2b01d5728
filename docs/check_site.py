"""Check a built documentation site: math served from the site itself, no broken link.

    python3 docs/check_site.py docs/_build/html

1. Every page that holds math loads MathJax from the site's ``_static/mathjax/`` (no CDN),
   and the files are there (MathJax 3.2.2 from the PyPI package sphinx-mathjax-offline,
   copied in by docs/conf.py's extension list), fonts included.
2. When ``node`` is on PATH, the site's own MathJax typesets ``U V^\\top`` to CHTML with no
   network: the JavaScript that browsers will run works offline.
3. Every link within the site to a page and anchor reaches an existing page and anchor; the
   ``[docs]`` back-links of the source pages (viewcode) included.

Exit 1 with one line per problem; 0 with a summary line.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

TYPESET = r"""
const dir = process.argv[1];
global.MathJax = {
  loader: {paths: {mathjax: dir}, load: ['input/tex', 'output/chtml', 'adaptors/liteDOM'],
           require: require},
  startup: {typeset: false},
};
require(dir + '/startup.js');
MathJax.startup.promise
  .then(() => MathJax.tex2chtmlPromise('U V^\\top', {display: false}))
  .then((node) => console.log(MathJax.startup.adaptor.outerHTML(node)))
  .catch((err) => { console.error(String(err)); process.exit(1); });
"""


def check_math(site: Path) -> tuple[list[str], int]:
    problems: list[str] = []
    mathjax = site / "_static" / "mathjax"
    for needed in ("tex-chtml.js", "startup.js", "output/chtml/fonts/woff-v2"):
        if not (mathjax / needed).exists():
            problems.append(f"missing {mathjax / needed}: MathJax is not served from the site")
    pages = 0
    for page in site.rglob("*.html"):
        text = page.read_text()
        if 'class="math' not in text:
            continue
        pages += 1
        scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', text, re.IGNORECASE)
        if not scripts:
            problems.append(f"{page.relative_to(site)}: math but no MathJax script")
        for src in scripts:
            if "://" in src or src.startswith("//"):
                problems.append(f"{page.relative_to(site)}: MathJax from {src}, not the site")
            elif not (page.parent / src).resolve().exists():
                problems.append(f"{page.relative_to(site)}: {src} does not exist")
    if pages == 0:
        problems.append("no page holds math: the check would prove nothing")
    return problems, pages


def check_typeset(site: Path) -> tuple[list[str], str]:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        return [], "skipped (no node on PATH)"
    proc = subprocess.run(
        [node, "-e", TYPESET, str((site / "_static" / "mathjax").resolve())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0 or "<mjx-container" not in proc.stdout:
        return [f"MathJax did not typeset offline: {proc.stderr.strip()[:300]}"], "failed"
    return [], "U V^T typeset by the site's MathJax in node"


def check_links(site: Path) -> tuple[list[str], int]:
    ids: dict[Path, set[str]] = {}

    def anchors(page: Path) -> set[str]:
        if page not in ids:
            text = page.read_text() if page.exists() else ""
            ids[page] = set(re.findall(r'id="([^"]+)"', text))
        return ids[page]

    problems, count = [], 0
    for page in sorted(site.rglob("*.html")):
        text = page.read_text()
        for m in re.finditer(r'<a [^>]*href="([^"#:]*)(?:#([^"]*))?"[^>]*>(.*?)</a>', text, re.S):
            target, anchor, label = m.groups()
            if not target and not anchor:
                continue
            count += 1
            dest = (page.parent / target).resolve() if target else page
            if target and not dest.exists():
                problems.append(f"{page.relative_to(site)}: link to missing {target}")
            elif anchor and html.unescape(anchor) not in anchors(dest):
                text_label = re.sub("<.*?>", "", label).strip()[:30]
                problems.append(
                    f"{page.relative_to(site)}: '{text_label}' links to {target}#{anchor}, "
                    "which does not exist"
                )
    return problems, count


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 docs/check_site.py SITE_DIR", file=sys.stderr)
        return 2
    site = Path(argv[0])
    if not (site / "index.html").exists():
        print(f"{site}: no index.html: build the site first", file=sys.stderr)
        return 2
    math_problems, pages = check_math(site)
    typeset_problems, typeset = check_typeset(site)
    link_problems, links = check_links(site)
    problems = math_problems + typeset_problems + link_problems
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(
        f"site ok: {pages} page(s) with math load MathJax from _static/mathjax; offline "
        f"typesetting: {typeset}; {links} internal links resolve"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
