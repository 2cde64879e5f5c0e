"""The registry of dispatch rules. Each rule is one module owning everything about it:
its manifest section (types, parser, validation), its batch dispatcher, its
MACs accounting, the paths it offers the profiler, and its description.

A family whose dispatch is new adds one module here and one line below.
"""

from __future__ import annotations

from runtime.rules import argmax, budget, gated, policy
from runtime.rules.rule import (
    ROLES, BlockWalk, Decision, Dispatcher, GraphCall, OperatingPoint, Request, Rule, Section, graphs_in_role,
)

__all__ = [
    "RULES", "ROLES", "Rule", "Section", "Dispatcher", "Decision", "GraphCall", "Request", "OperatingPoint", "BlockWalk",
    "graphs_in_role",
]

RULES = {rule.name: rule for rule in (argmax.RULE, policy.RULE, gated.RULE, budget.RULE)}

