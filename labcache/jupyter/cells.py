"""What a notebook cell reads and assigns, from its syntax tree.

``%%cache`` keys a cell on the values of the names it *reads* from the
namespace, and checks that the variables it is asked to store are ones the
cell *assigns*.  A name counts as read when the cell may use it before
assigning it: ``x = x + 1`` reads ``x``; ``y = 1; z = y`` does not read
``y``.  Names used inside function bodies, lambdas and comprehensions count
as read unless bound there, since they are looked up when the code runs.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["CellNames", "analyze"]


@dataclass
class CellNames:
    """Names a cell reads before assigning them, names it assigns, and the
    attribute names it reads (``features.scale`` reads ``scale`` of ``features``)."""

    reads: set[str] = field(default_factory=set)
    assigns: set[str] = field(default_factory=set)
    attributes: set[str] = field(default_factory=set)


def analyze(source: str) -> CellNames:
    """Read and assigned names of Python ``source``.

    Examples:
        >>> names = analyze("import numpy as np\\nx = x + 1\\ny = np.sqrt(x) * scale")
        >>> sorted(names.reads), sorted(names.assigns)
        (['scale', 'x'], ['np', 'x', 'y'])
    """
    walker = _Walker()
    walker.visit(ast.parse(source))
    walker.names.reads -= set(dir(builtins)) - walker.names.assigns
    return walker.names


class _Walker(ast.NodeVisitor):
    """Visits statements in the order Python evaluates them."""

    def __init__(self) -> None:
        self.names = CellNames()

    def _load(self, name: str) -> None:
        if name not in self.names.assigns:
            self.names.reads.add(name)

    def _store(self, name: str) -> None:
        self.names.assigns.add(name)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.names.attributes.add(node.attr)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        else:
            self._store(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)  # the right side runs first
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)  # x += 1 reads x first
        self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for statement in [*node.body, *node.orelse]:
            self.visit(statement)

    visit_AsyncFor = visit_For

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._store(node.name)
        for statement in node.body:
            self.visit(statement)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            self._store(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._free_reads(node.args, node.body)
        self._store(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expression in [*node.decorator_list, *node.bases]:
            self.visit(expression)
        self._free_reads(None, node.body)
        self._store(node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._free_reads(node.args, [node.body])

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp
                       | ast.DictComp) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        self._free_reads(None, [node])

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def _free_reads(self, arguments: ast.arguments | None, body: Sequence[ast.AST]) -> None:
        """Names a nested scope reads from outside: read minus bound inside it."""
        inner = _Walker()
        if arguments is not None:
            for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                        *filter(None, [arguments.vararg, arguments.kwarg])]:
                inner._store(arg.arg)
            for default in [*arguments.defaults, *filter(None, arguments.kw_defaults)]:
                self.visit(default)
        for node in body:
            if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                for generator in node.generators:
                    inner.visit(generator.target)
                    for condition in generator.ifs:
                        inner.visit(condition)
                for generator in node.generators[1:]:
                    inner.visit(generator.iter)
                for part in ([node.key, node.value] if isinstance(node, ast.DictComp)
                             else [node.elt]):
                    inner.visit(part)
            else:
                inner.visit(node)
        for name in inner.names.reads:
            self._load(name)
        self.names.attributes |= inner.names.attributes
