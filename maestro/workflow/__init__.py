"""Workflow specs: the DAG of persona steps a run follows, loaded and validated up front.

Typical use::

    spec = load_workflow("sdlc-parallel")      # or a path to a YAML file
    spec = parse_workflow_yaml(text)           # YAML from the API
    spec.ancestors("testing")                  # ['backend', 'frontend', 'architecture', ...]

Every loader raises ``WorkflowError`` (an ``InvalidArgument``) listing all problems.
"""

from maestro.workflow.durations import format_duration, parse_duration
from maestro.workflow.loader import (
    builtin_workflow,
    builtin_workflow_names,
    builtin_workflow_yaml,
    load_workflow,
    parse_workflow_yaml,
)
from maestro.workflow.spec import (
    Budget,
    RetryPolicy,
    StepKind,
    StepSpec,
    WorkflowError,
    WorkflowProblem,
    WorkflowSpec,
)

__all__ = [
    "Budget",
    "RetryPolicy",
    "StepKind",
    "StepSpec",
    "WorkflowError",
    "WorkflowProblem",
    "WorkflowSpec",
    "builtin_workflow",
    "builtin_workflow_names",
    "builtin_workflow_yaml",
    "format_duration",
    "load_workflow",
    "parse_duration",
    "parse_workflow_yaml",
]
