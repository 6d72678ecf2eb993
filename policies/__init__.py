"""ztgate's policy decisions: YAML policy files with CEL conditions; a context in, a Decision out.

Pure: no I/O besides reading the policy directory at load time. See policies/README.md.
"""

from .decision import Decision, Expectations, NearMiss
from .diagnostics import Diagnostic, PolicyLoadError
from .explain import Explanation, explain
from .loader import check_directory, load_directory
from .model import Action
from .policyset import PolicySet
from .schema import SIGNAL_NAMES, build_context
from .testing import TestReport, run_tests

DEFAULTS_DIR = __import__("pathlib").Path(__file__).with_name("defaults")

__all__ = [
    "Action", "DEFAULTS_DIR", "Decision", "Diagnostic", "Expectations", "Explanation", "NearMiss", "PolicyLoadError",
    "PolicySet", "SIGNAL_NAMES", "TestReport", "build_context", "check_directory", "explain", "load_directory",
    "run_tests",
]
