"""Jinja templates in Robot Code, checked and rendered in a sandbox.

Templates come from the people who edit connectors, and the values they render
come from e-mail senders. The sandbox blocks attributes that start with an
underscore and Python internals, so a template cannot reach the application's
objects or settings.

NOTE: the sandbox does not bound CPU time or memory. The limits below stop the
obvious cases, but nested loops that print nothing, or a filter or string method
given a huge width, can still keep a worker busy.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError

JOB_NAME_VARIABLES = ("subject", "sender", "file_name", "files", "connector", "date")
"""Variables that a job_name template can use."""

MAX_RENDERED_CHARS = 10_000
"""Rendering stops after this many characters, before whitespace is collapsed."""

MAX_REPEAT_CHARS = 10_000
"""Maximum length of a string or list that ``*`` may build, such as ``'-' * 20``."""

MAX_POWER_EXPONENT = 100
"""Maximum absolute exponent of ``**``, so that ``10 ** 100000`` cannot build a huge number."""

_BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
}


class _Sandbox(SandboxedEnvironment):
    """A sandbox that raises on unsafe attributes and on oversized ``*`` and ``**``.

    Jinja's sandbox returns an undefined value for an unsafe attribute, and with
    ChainableUndefined that would render as an empty string. Raising instead turns
    an attempt to reach Python internals into a reported error.
    """

    intercepted_binops = frozenset(_BINARY_OPERATORS)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(count, int)
                    and len(sequence) * count > MAX_REPEAT_CHARS
                ):
                    raise SecurityError(
                        f"'*' would build a value longer than {MAX_REPEAT_CHARS} items"
                    )
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_POWER_EXPONENT:
            raise SecurityError(f"'**' exponents above {MAX_POWER_EXPONENT} are not allowed")
        return _BINARY_OPERATORS[operator](left, right)


def _finalize(value: Any) -> Any:
    """Render None, such as a message without a subject, as an empty string."""
    return "" if value is None else value


_environment = _Sandbox(
    autoescape=False,
    undefined=ChainableUndefined,
    finalize=_finalize,
    keep_trailing_newline=False,
)
# namespace() lets a loop grow a value across iterations, and lipsum, cycler and
# joiner have no use in a job name.
for _name in ("namespace", "lipsum", "cycler", "joiner"):
    _environment.globals.pop(_name, None)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> Template:
    return _environment.from_string(source)


def check_template(source: str, variables: tuple[str, ...] = JOB_NAME_VARIABLES) -> list[str]:
    """Compile ``source`` in the sandbox and return what is wrong with it, if anything.

    Besides syntax errors, this rejects unknown variables, filters and tests, and
    attributes that start with an underscore, so that mistakes show when the Robot
    Code is saved instead of when a job is named.
    """
    try:
        tree = _environment.parse(source)
    except TemplateSyntaxError as error:
        return [f"invalid template: {error.message} (template line {error.lineno})"]

    problems = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        attribute = _private_attribute(node)
        if attribute is not None:
            problems.append(
                f"{attribute!r} is not allowed because templates cannot use "
                "attributes that start with an underscore"
            )
    for filter_node in tree.find_all(nodes.Filter):
        if filter_node.name not in _environment.filters:
            problems.append(f"unknown filter {filter_node.name!r}")
    for test_node in tree.find_all(nodes.Test):
        if test_node.name not in _environment.tests:
            problems.append(f"unknown test {test_node.name!r}")

    if problems:
        return problems

    # find_undeclared_variables compiles the tree, so it also reports compile errors.
    try:
        undeclared = meta.find_undeclared_variables(tree)
        _compile(source)
    except TemplateSyntaxError as error:
        return [f"invalid template: {error.message} (template line {error.lineno})"]
    known = set(variables) | set(_environment.globals)
    return [
        f"unknown variable {name!r}. Use {', '.join(variables)}."
        for name in sorted(undeclared - known)
    ]


def _private_attribute(node: nodes.Node) -> str | None:
    """Return the attribute name when ``node`` reads one that starts with an underscore."""
    name: Any
    if isinstance(node, nodes.Getattr):
        name = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        name = node.arg.value
    elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
        argument = node.args[0]
        name = argument.value if isinstance(argument, nodes.Const) else None
    else:
        return None
    return name if isinstance(name, str) and name.startswith("_") else None


def render_template(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` in the sandbox, stopping after MAX_RENDERED_CHARS characters.

    Raises whatever the template raises: TemplateError subclasses for template
    faults, SecurityError among them, and plain Python errors such as
    ZeroDivisionError from the expressions it evaluates.
    """
    chunks = []
    length = 0
    for chunk in _compile(source).generate(**context):
        chunks.append(chunk)
        length += len(chunk)
        if length > MAX_RENDERED_CHARS:
            break
    return "".join(chunks)[:MAX_RENDERED_CHARS]
