"""Scheduler accounting (SLURM sacct, SGE qacct) as scheduler-neutral records."""

from memfit.accounting.fetch import (
    SCHEDULERS,
    detect_scheduler,
    fetch_accounting,
    parse_accounting,
    read_accounting_file,
    sacct_command,
)
from memfit.accounting.qacct import qacct_tasks
from memfit.accounting.records import (
    AccountingError,
    AccountingUnavailable,
    TaskAccounting,
)
from memfit.accounting.sacct import expand_task_range, sacct_tasks

__all__ = [
    "SCHEDULERS",
    "AccountingError",
    "AccountingUnavailable",
    "TaskAccounting",
    "detect_scheduler",
    "expand_task_range",
    "fetch_accounting",
    "parse_accounting",
    "qacct_tasks",
    "read_accounting_file",
    "sacct_command",
    "sacct_tasks",
]
