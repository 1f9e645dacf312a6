"""The REST API: the Linode NodeBalancers v4 and Scaleway LB v1 dialects over the one
model, /healthz, /metrics, /openapi.json, and the native config endpoint the CLI uses."""
from control.api.server import ApiRefused, ApiServer, token_for

__all__ = ["ApiRefused", "ApiServer", "token_for"]
