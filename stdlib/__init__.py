"""The standard library specs import: ``.mux`` modules (prompts, ready tasks) in ``modules/`` and
computational parts (extractors, equivalence rules, selection rules) registered by name in
``registry``. Importing this package is cheap; implementations load on first use.
"""
from muxlang.stdlib.registry import (  # noqa: F401
    EQUIVALENCES,
    EXTRACTORS,
    RULES,
    Entry,
    Param,
    get_rule,
    make_equivalence,
    make_extractor,
    module_path,
    module_names,
)
