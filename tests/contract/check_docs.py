"""Checks the docs page as headless Chromium rendered it (its DOM after the
page's scripts ran): every operation of the spec is rendered, under its tag,
and the page loads nothing from another origin (it must work offline).

Usage: check_docs.py SPEC DOM_FILE BASE_URL
"""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        for attr in ("src", "href"):
            url = a.get(attr) or ""
            loads = tag in ("script", "img", "iframe") or (tag == "link" and attr == "href")
            if loads and re.match(r"^(https?:)?//", url):
                self.external.append(f"<{tag} {attr}={url}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def main() -> None:
    spec_path, dom_path, base = sys.argv[1:4]
    spec = json.load(open(spec_path))
    page = Page()
    page.feed(open(dom_path, encoding="utf-8").read())
    text = " ".join(page.text)

    problems: list[str] = []
    title = spec["info"]["title"]
    if title not in text:
        problems.append(f"the title {title!r} is not rendered")
    count = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            count += 1
            tag = op["tags"][0]
            # Swagger UI renders each operation as an `opblock` with this id.
            if f"operations-{tag}-{op['operationId']}" not in page.ids:
                problems.append(f"{method.upper()} {path} ({op['operationId']}) is not rendered")
    external = [u for u in page.external if not u.split("=", 1)[1].startswith(base)]
    if external:
        problems.append(f"the page loads from other origins: {external}")
    if problems:
        print("docs page check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"docs page: {count} operations rendered, no external assets")


if __name__ == "__main__":
    main()
