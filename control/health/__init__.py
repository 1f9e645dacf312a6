"""Active and passive health checks: check types in `checks`, the per-server loops and
their UP/DOWN state in `monitor`."""
from control.health.checks import CheckResult, run_check
from control.health.monitor import HealthMonitor, ServerStatus

__all__ = ["CheckResult", "HealthMonitor", "ServerStatus", "run_check"]
