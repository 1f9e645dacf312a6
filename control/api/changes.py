"""Every API change goes the same way: under the daemon's lock (one writer: SIGHUP, API and
CLI queue there), edit a copy of the config, validate the whole, apply it to the data
planes and write the file. A refused change leaves the running config and the file as
they were; the daemon counts and logs the refusal (Daemon.commit), the client gets the
reason in its dialect's shape, never a traceback."""
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from control.api.errors import ApiError
from control.config import ConfigError, error_message, field_path
from control.edit import Change, NotFound
from control.model import Config


async def commit(daemon, edit: Callable[[Change], object], render: Callable[[Config, object], object]):
    """`edit(change)` edits; `render(new_config, what edit returned)` builds the answer
    from the committed config (ids and VIPs assigned). ConfigError and NotFound come out
    as they are, for the dialect to name the field in its own words."""
    async with daemon.lock:
        change = Change(daemon.config)
        result = edit(change)
        new = change.done()
        await apply_config(daemon, new)
        return render(new, result)


async def apply_config(daemon, new: Config) -> None:
    """daemon.commit(new) under the caller's daemon.lock. A data plane's refusal (a full
    slot table, a port taken, ...) is a 400 naming it; any other failure a 500 with its
    reason. Either way the running config stays."""
    try:
        await daemon.commit(new)
    except (ConfigError, NotFound, ApiError):
        raise
    except (OSError, ValueError, RuntimeError) as e:
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e) or type(e).__name__
        raise ApiError.bad_request(None, f"the data plane refused the change: {reason}; "
                                         f"the running config stays") from None
    except Exception as e:
        raise ApiError(500, [(None, f"applying the change failed ({type(e).__name__}: {e}); "
                                    f"the running config stays")]) from None
    api = getattr(daemon, "api", None)
    if api is not None:
        api.changes += 1


def validated(cls: type[BaseModel], data: dict, at: str) -> BaseModel:
    """A model object built by a dialect; errors name the field as the config file does
    (`at` is the object's path, e.g. "ips[3].")."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError([(f"{at}{field_path(err['loc'])}", error_message(err)) for err in e.errors()]) from None


__all__ = ["apply_config", "commit", "validated", "Change", "ConfigError", "NotFound"]
