"""The settings reference, generated from ``hermes_gevent.settings.Defaults``.

``.. hermes-settings::`` renders every setting ``Defaults`` declares, in declaration order:
its default (``repr``), the constructor keywords (``Settings.keyword_map()``), the Flask
config key (``hermes_gevent.flask.Config.setting_key``), where it can come from the
environment, and its description - the ``#:`` comment above its line in ``Defaults``. A
setting without such a comment is a warning, so ``sphinx-build -W`` fails: code and docs
cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

MODULE = "hermes_gevent.settings"
CLASS = "Defaults"


def setting_docs() -> dict[str, str]:
    """Every ``#:`` comment of ``Defaults``, by setting name, as one text."""
    analyzer = ModuleAnalyzer.for_module(MODULE)
    found = analyzer.find_attr_docs()
    return {name: "\n".join(lines).strip() for (cls, name), lines in found.items() if cls == CLASS}


def describe() -> list[dict[str, Any]]:
    """What the page shows for every setting, in declaration order (tests/test_docs.py uses it too)."""
    from hermes_gevent.flask import Config
    from hermes_gevent.settings import Defaults, Settings

    docs = setting_docs()
    keywords: dict[str, list[str]] = {}
    for keyword, name in Settings.keyword_map().items():
        keywords.setdefault(name, []).append(keyword)
    rows = []
    for name in Defaults.__annotations__:
        rows.append({
            "name": name,
            "default": repr(getattr(Defaults, name)),
            # the short keyword first: retry_limit before default_retry_limit
            "keywords": sorted(keywords[name], key=len),
            "flask": Config.setting_key(name),
            "environment": f"HERMES_{name}",
            "description": docs.get(name, ""),
        })
    return rows


class SettingsDirective(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        # Rebuild this page whenever settings.py changes.
        analyzer = ModuleAnalyzer.for_module(MODULE)
        if analyzer.srcname:
            self.env.note_dependency(str(analyzer.srcname))
        rows = describe()
        text: list[str] = [
            ".. list-table:: Every setting at a glance",
            "   :header-rows: 1",
            "",
            "   * - setting",
            "     - keyword",
            "     - default",
        ]
        for row in rows:
            text += [f"   * - :ref:`{row['name']} <setting-{row['name'].lower()}>`",
                     f"     - ``{row['keywords'][0]}``",
                     f"     - ``{row['default']}``"]
        text.append("")
        for row in rows:
            name = row["name"]
            if not row["description"]:
                logger.warning(
                    "setting %s has no description: add a '#:' comment above its line in "
                    "hermes_gevent/settings.py (class Defaults)", name, location=self.get_location())
            keywords = " or ".join(f"``{k}=``" for k in row["keywords"])
            title = f"``{name}``"
            text += [
                f".. _setting-{name.lower()}:",
                "",
                title,
                "-" * len(title),
                "",
                f":Default: ``{row['default']}``",
                f":Keyword: {keywords}",
                f":Flask config: ``{row['flask']}``",
                f":Environment: ``{row['environment']}`` (read by the example app, ``flask_example``; "
                "the library itself reads no setting from the environment)",
                "",
            ]
            text += (row["description"] or "*(no description)*").splitlines()
            text.append("")
        node = nodes.container()
        nested_parse_with_titles(self.state, StringList(text, source=self.get_source_info()[0]), node)
        return node.children


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("hermes-settings", SettingsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
