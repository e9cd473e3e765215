"""Workflow specs: the DAG of persona steps a run follows, loaded and validated up front.

Typical use::

    spec = load_workflow("sdlc-parallel")      # or a path to a YAML file
    spec = parse_workflow_yaml(text)           # YAML from a file, in a CLI
    spec = await parse_workflow_off_loop(text, source="workflow_yaml", time_limit=5)
                                               # YAML from the API, in a service
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
from maestro.workflow.offloop import VALIDATION_TIME_LIMIT_SECONDS, parse_workflow_off_loop
from maestro.workflow.spec import (
    Budget,
    RetryPolicy,
    StepSpec,
    WorkflowError,
    WorkflowProblem,
    WorkflowSpec,
)
from maestro.workflow.step_kind import StepKind

__all__ = [
    "Budget",
    "VALIDATION_TIME_LIMIT_SECONDS",
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
    "parse_workflow_off_loop",
    "parse_workflow_yaml",
]
